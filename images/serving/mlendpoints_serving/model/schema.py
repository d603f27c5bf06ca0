"""Decoders compiled once from an MLflow signature: JSON-shaped input -> validated numpy/pandas.

They check every value against the signature (naming the column or tensor and what
was expected when it does not fit) and convert to the exact dtypes MLflow's own schema
enforcement produces, so the flavor's predict can be called without enforcing again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from mlendpoints_serving.model.errors import InputError

# MLflow scalar column type -> (numpy dtype, value check, name used in messages)
_FLOATY = (float, int)


def _is_float(v: object) -> bool:
    return type(v) in _FLOATY or v is None


def _is_int(v: object) -> bool:
    return type(v) is int


def _is_bool(v: object) -> bool:
    return type(v) is bool


def _is_str(v: object) -> bool:
    return type(v) is str


SCALAR_TYPES: dict[str, tuple[np.dtype[Any], Callable[[object], bool]]] = {
    "double": (np.dtype(np.float64), _is_float),
    "float": (np.dtype(np.float32), _is_float),
    "long": (np.dtype(np.int64), _is_int),
    "integer": (np.dtype(np.int32), _is_int),
    "boolean": (np.dtype(np.bool_), _is_bool),
    "string": (np.dtype(object), _is_str),
}

# The same checks as sets of exact types: one set per request instead of one call per value.
_NONE = type(None)
_TYPES: dict[str, frozenset[type]] = {
    "double": frozenset({float, int, _NONE}),
    "float": frozenset({float, int, _NONE}),
    "long": frozenset({int}),
    "integer": frozenset({int}),
    "boolean": frozenset({bool}),
    "string": frozenset({str}),
}

# numpy dtype kinds a JSON array may arrive as, per target dtype kind
_TENSOR_KINDS = {"f": "fiu", "i": "iu", "u": "u", "b": "b", "U": "U", "O": "OU"}


def _json_type(v: object) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        type(None): "null",
        list: "array",
        dict: "object",
    }.get(type(v), type(v).__name__)


def _bad_value(column: str, expected: str, value: object, row: int) -> InputError:
    shown = repr(value)[:60]
    return InputError(f"column '{column}' (row {row}): expected {expected}, got {_json_type(value)} {shown}")


# A 2-D block in signature column order, or a DataFrame.
Columns: TypeAlias = np.ndarray[Any, Any] | pd.DataFrame


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str  # MLflow type name: double, float, long, integer, boolean, string

    @property
    def dtype(self) -> np.dtype[Any]:
        return SCALAR_TYPES[self.type][0]


class ColumnDecoder:
    """A column-based signature of scalar columns -> a DataFrame in signature order and dtypes.

    With one shared numeric dtype, rows decode to a 2-D block (Fortran order, the layout of
    the DataFrame pandas would build from it) and the DataFrame is made only if needed.
    """

    def __init__(self, columns: Sequence[ColumnSpec]) -> None:
        self.columns = list(columns)
        self.names = [c.name for c in self.columns]
        self._index = {n: i for i, n in enumerate(self.names)}
        self._checks = [SCALAR_TYPES[c.type][1] for c in self.columns]
        dtypes = {c.dtype for c in self.columns}
        # All columns of one numeric dtype: rows decode straight into one 2-D array (a "block").
        self.shared_dtype = dtypes.pop() if len(dtypes) == 1 and np.dtype(object) not in dtypes else None
        # All columns of one MLflow type: the types a request's values may have, checked at once.
        types = {c.type for c in self.columns}
        self._shared_types = _TYPES[types.pop()] if len(types) == 1 else None
        # Per column list a client sent: where each signature column is in it, and whether that is
        # the signature's own order (rows are then taken as they are).
        self._known_positions: dict[tuple[object, ...], tuple[list[int], bool]] = {}
        self._in_order = (list(range(len(self.names))), True)

    def _all_valid(self, values: list[list[object]]) -> bool:
        """Whether every value is of its column's type, when one set check can tell (else False)."""
        return (
            self._shared_types is not None
            and set(map(type, chain.from_iterable(values))) <= self._shared_types
        )

    def describe(self) -> str:
        return ", ".join(f"{c.name}: {c.type}" for c in self.columns)

    def frame(self, columns: Columns) -> pd.DataFrame:
        return columns if isinstance(columns, pd.DataFrame) else pd.DataFrame(columns, columns=self.names)

    def _positions(self, given: Sequence[object]) -> tuple[list[int], bool]:
        """Where each signature column is in `given` columns (extra columns are ignored as MLflow
        does), and whether `given` is exactly the signature's columns in order."""
        try:
            key = tuple(given)
            return self._known_positions[key]
        except (KeyError, TypeError):  # not seen yet, or names that are not even hashable
            pass
        positions = self._find_positions(given)
        found = positions, positions == list(range(len(given)))
        if len(self._known_positions) < 64:  # clients send the same few column lists
            self._known_positions[key] = found
        return found

    def _find_positions(self, given: Sequence[object]) -> list[int]:
        for name in given:
            if not isinstance(name, str):
                raise InputError(f"column names must be strings, got {_json_type(name)} {name!r:.60}")
        where = {name: i for i, name in enumerate(given)}
        missing = [n for n in self.names if n not in where]
        if missing:
            raise InputError(f"missing column(s) {missing}; the model expects columns [{self.describe()}]")
        return [where[n] for n in self.names]

    def from_rows(self, rows: object, given: Sequence[object] | None = None) -> Columns:
        """Rows of values; `given` names their columns (split orient), else signature order."""
        if not isinstance(rows, list):
            raise InputError(f"'data' must be a list of rows, got {_json_type(rows)}")
        width = len(given) if given is not None else len(self.names)
        positions, identity = self._positions(given) if given is not None else self._in_order
        checks, names = self._checks, self.names
        out: list[list[object]] = []
        for r, row in enumerate(rows):
            if type(row) is not list or len(row) != width:
                got = f"{len(row)} values" if isinstance(row, list) else _json_type(row)
                raise InputError(f"row {r}: expected a list of {width} values ({self.describe()}), got {got}")
            out.append(row if identity else [row[p] for p in positions])
        if not self._all_valid(out):
            for r, picked in enumerate(out):
                for j, v in enumerate(picked):
                    if not checks[j](v):
                        raise _bad_value(names[j], self.columns[j].type, v, r)
        return self._frame_from_rows(out)

    def from_records(self, records: object) -> Columns:
        if not isinstance(records, list):
            raise InputError(f"records must be a list of objects, got {_json_type(records)}")
        rows: list[list[object]] = []
        for r, rec in enumerate(records):
            if type(rec) is not dict:
                raise InputError(
                    f"record {r}: expected an object with columns [{self.describe()}], got {_json_type(rec)}"
                )
            try:
                row = [rec[n] for n in self.names]
            except KeyError as exc:
                raise InputError(
                    f"record {r}: missing column '{exc.args[0]}'; the model expects columns "
                    f"[{self.describe()}]"
                ) from None
            for j, v in enumerate(row):
                if not self._checks[j](v):
                    raise _bad_value(self.names[j], self.columns[j].type, v, r)
            rows.append(row)
        return self._frame_from_rows(rows)

    def from_columns(self, columns: object) -> Columns:
        """A dict of column name -> list of values (or one scalar value)."""
        if not isinstance(columns, dict):
            raise InputError(f"expected an object of columns [{self.describe()}], got {_json_type(columns)}")
        missing = [n for n in self.names if n not in columns]
        if missing:  # extra columns are ignored, as MLflow does
            raise InputError(f"missing column(s) {missing}; the model expects columns [{self.describe()}]")
        values = [columns[n] if type(columns[n]) is list else [columns[n]] for n in self.names]
        lengths = {len(v) for v in values}
        if len(lengths) > 1:
            raise InputError(
                f"columns have different lengths: {dict(zip(self.names, map(len, values), strict=True))}"
            )
        return self.from_lists(values)

    def from_lists(self, values: list[list[object]]) -> Columns:
        """One list of values per signature column, in signature order, all of one length (the
        caller checked): what `from_columns` makes of its object, and what a V2 request's inputs
        are when they name the signature's columns in order."""
        if not self._all_valid(values):
            for j, col in enumerate(values):
                for r, v in enumerate(col):
                    if not self._checks[j](v):
                        raise _bad_value(self.names[j], self.columns[j].type, v, r)
        if self.shared_dtype is not None:
            # One array for all columns (not one per column, then stacked); its transpose is the
            # Fortran-ordered block rows decode to. numpy makes None NaN in a float array itself.
            width, rows = len(self.names), len(values[0]) if values else 0
            try:
                if self.shared_dtype.kind in "fiub":
                    # From the flat values: a third cheaper than np.array's walk of nested lists.
                    flat = np.fromiter(chain.from_iterable(values), self.shared_dtype, count=width * rows)
                    return flat.reshape(width, rows).T
                return np.array(values, dtype=self.shared_dtype).reshape(width, -1).T
            except OverflowError:
                raise InputError(f"a value is out of range for {self.columns[0].type}") from None
        arrays = [self._array(col, c) for col, c in zip(values, self.columns, strict=True)]
        return pd.DataFrame(dict(zip(self.names, arrays, strict=True)), columns=self.names)

    def from_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A DataFrame parsed elsewhere (CSV): select signature columns, cast to signature dtypes."""
        self._positions(list(frame.columns))
        out = {}
        for c in self.columns:
            col = frame[c.name]
            try:
                out[c.name] = col.to_numpy(dtype=c.dtype) if col.dtype != c.dtype else col.to_numpy()
            except (TypeError, ValueError) as exc:
                raise InputError(f"column '{c.name}': expected {c.type}: {exc}") from None
        return pd.DataFrame(out, columns=self.names)

    def _array(self, values: list[object], spec: ColumnSpec) -> np.ndarray[Any, Any]:
        try:
            return np.array(
                [np.nan if v is None else v for v in values] if spec.type in ("double", "float") else values,
                dtype=spec.dtype,
            )
        except OverflowError:
            raise InputError(f"column '{spec.name}': value out of range for {spec.type}") from None

    def _frame_from_rows(self, rows: list[list[object]]) -> Columns:
        if self.shared_dtype is not None:
            try:
                block = np.array(rows, dtype=self.shared_dtype).reshape(len(rows), len(self.names))
            except OverflowError:
                raise InputError(f"a value is out of range for {self.columns[0].type}") from None
            # Fortran order, as pandas lays out a frame built from rows and as MLflow's enforced
            # frame arrives at the estimator: BLAS then sums in the same order, bit-identical.
            return np.asfortranarray(block)
        cols = list(zip(*rows, strict=True)) if rows else [() for _ in self.names]
        return pd.DataFrame(
            {c.name: self._array(list(v), c) for c, v in zip(self.columns, cols, strict=True)},
            columns=self.names,
        )


@dataclass(frozen=True)
class TensorDecoder:
    """One TensorSpec: a nested list -> ndarray of its dtype, shape checked (-1 is any size)."""

    name: str | None
    dtype: np.dtype[Any]
    shape: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"tensor '{self.name}'" if self.name else "tensor"

    def describe(self) -> str:
        return f"{self.dtype.name} of shape {list(self.shape)}"

    def decode(self, value: object) -> np.ndarray[Any, Any]:
        if isinstance(value, dict):
            raise InputError(f"{self.label}: expected a nested list ({self.describe()}), got an object")
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            raise InputError(f"{self.label}: expected {self.describe()}, got a ragged nested list") from None
        if arr.size and arr.dtype.kind not in _TENSOR_KINDS.get(self.dtype.kind, self.dtype.kind):
            kind = "null or mixed values" if arr.dtype.kind == "O" else f"{arr.dtype.name} values"
            raise InputError(f"{self.label}: expected {self.describe()}, got {kind}")
        if len(arr.shape) != len(self.shape) or any(
            want not in (-1, got) for want, got in zip(self.shape, arr.shape, strict=True)
        ):
            raise InputError(f"{self.label}: expected {self.describe()}, got shape {list(arr.shape)}")
        try:
            return arr.astype(self.dtype, copy=False)
        except (OverflowError, ValueError) as exc:
            raise InputError(f"{self.label}: expected {self.describe()}: {exc}") from None
