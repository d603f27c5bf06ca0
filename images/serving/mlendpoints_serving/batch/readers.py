"""Input files -> model input: tables as DataFrames (in bounded chunks), images as arrays.

A file larger than the chunk size is read a chunk at a time, so memory stays
bounded whatever the file's size. Chunk sizes are in bytes of input, turned into
rows from the file's own average row size.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import IO, Any

import fsspec
import numpy as np
import pandas as pd

TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_SAMPLE_BYTES = 1 << 16


class UnsupportedFile(ValueError):
    """The file's type is not one the no-code path can read (an item error, not a crash)."""


def kind(name: str) -> str:
    suffix = posixpath.splitext(name)[1].lower()
    if suffix in TABLE_SUFFIXES:
        return "table"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    raise UnsupportedFile(
        f"unsupported file type '{suffix or name}': expected a table ({', '.join(TABLE_SUFFIXES)}) "
        f"or an image ({', '.join(IMAGE_SUFFIXES)})"
    )


def _rows_per_chunk(fh: IO[bytes], chunk_bytes: int) -> int:
    """Rows of a line-based file that make about `chunk_bytes`, from its first 64 KiB."""
    sample = fh.read(_SAMPLE_BYTES)
    fh.seek(0)
    lines = max(1, sample.count(b"\n"))
    return max(1, chunk_bytes * lines // max(1, len(sample)))


def read_table(uri: str, size: int, chunk_bytes: int) -> Iterator[pd.DataFrame]:
    suffix = posixpath.splitext(uri)[1].lower()
    with fsspec.open(uri, "rb") as fh:
        if suffix == ".parquet":
            yield from _read_parquet(fh, size, chunk_bytes)
            return
        reader: Any = pd.read_csv if suffix == ".csv" else _read_jsonl
        if size <= chunk_bytes:
            yield reader(fh)
            return
        with reader(fh, chunksize=_rows_per_chunk(fh, chunk_bytes)) as chunks:
            yield from chunks


def _read_jsonl(fh: IO[bytes], **kwargs: Any) -> Any:
    return pd.read_json(fh, lines=True, **kwargs)


def _read_parquet(fh: IO[bytes], size: int, chunk_bytes: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(fh)
    meta = pf.metadata
    if size <= chunk_bytes or meta.num_rows == 0:
        yield pf.read().to_pandas()
        return
    raw = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    rows = max(1, chunk_bytes * meta.num_rows // max(1, raw))
    for batch in pf.iter_batches(batch_size=rows):
        yield batch.to_pandas()


def read_image(uri: str) -> np.ndarray[Any, Any]:
    from PIL import Image, UnidentifiedImageError

    with fsspec.open(uri, "rb") as fh:
        try:
            with Image.open(fh) as img:
                return np.asarray(img)
        except UnidentifiedImageError as exc:
            raise ValueError(f"not a readable image: {exc}") from None
