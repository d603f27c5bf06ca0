"""Storage through fsspec: resolve URIs, list inputs deterministically, commit files atomically.

A commit is all-or-nothing against SIGKILL at any moment: on a local (or PVC) path
the data goes to a temporary name in the same folder and is renamed into place;
on an object store (s3://, gs://, abfss://) the object only appears when the
upload completes, so a killed writer leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem


@dataclass(frozen=True)
class InputFile:
    uri: str  # what fsspec opens (protocol included for remote files)
    name: str  # path relative to the input folder: the output's file_name
    size: int


class Location:
    """A folder (or file) on some filesystem, addressed by URI."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self.path = fsspec.core.url_to_fs(uri)
        self.path = self.path.rstrip("/") or self.path
        self.local = isinstance(self.fs, LocalFileSystem)

    def join(self, *parts: str) -> str:
        return posixpath.join(self.path, *parts)

    def full_uri(self, path: str) -> str:
        """A path of this filesystem as a URI another process can open."""
        return path if self.local else self.fs.unstrip_protocol(path)

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.join(rel)))

    def read_bytes(self, rel: str) -> bytes:
        return bytes(self.fs.cat_file(self.join(rel)))

    def read_many(self, rels: list[str]) -> dict[str, bytes]:
        """Several small files at once (concurrently on object stores)."""
        if not rels:
            return {}
        paths = [self.join(r) for r in rels]
        got = self.fs.cat(paths, on_error="raise")
        return {rel: got[path] for rel, path in zip(rels, paths, strict=True)}

    def list_names(self, rel: str) -> list[str]:
        """File names directly in a sub-folder ([] when it does not exist)."""
        try:
            self.fs.invalidate_cache(self.join(rel))
            return [posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.join(rel), detail=False)]
        except FileNotFoundError:
            return []

    def remove(self, rels: list[str]) -> None:
        for rel in rels:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.join(rel))

    def move(self, src: str, dest: str) -> None:
        """Put `src` at `dest`, replacing it: a rename locally, a copy then a delete on object stores
        (where the copy appears whole or not at all)."""
        if self.local:
            os.makedirs(posixpath.dirname(self.join(dest)), exist_ok=True)
            os.replace(self.join(src), self.join(dest))
            return
        self.fs.copy(self.join(src), self.join(dest))
        self.fs.rm_file(self.join(src))

    def remove_tree(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.fs.exists(self.join(rel)):
                self.fs.rm(self.join(rel), recursive=True)

    @contextlib.contextmanager
    def atomic_write(self, rel: str) -> Iterator[IO[bytes]]:
        """Write `rel` all at once or not at all (see the module docstring)."""
        dest = self.join(rel)
        if self.local:
            folder = posixpath.dirname(dest)
            os.makedirs(folder, exist_ok=True)
            tmp = posixpath.join(folder, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(dest)}")
            try:
                with open(tmp, "wb") as fh:
                    yield fh
                os.replace(tmp, dest)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            return
        remote: Any = self.fs.open(dest, "wb")
        try:
            yield remote
        except BaseException:
            # Closing would upload what was written so far: abort the upload instead.
            remote.discard()
            remote.closed = True
            raise
        remote.close()

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.atomic_write(rel) as fh:
            fh.write(data)


def list_inputs(uri: str, input_type: str) -> list[InputFile]:
    """The input files, sorted by their path relative to the input (the same order everywhere)."""
    loc = Location(uri)
    if input_type == "uriFile":
        info = loc.fs.info(loc.path)
        if info["type"] != "file":
            raise FileNotFoundError(f"input {uri} is not a file (input-type uriFile)")
        return [
            InputFile(
                uri=loc.full_uri(loc.path), name=posixpath.basename(loc.path), size=info.get("size") or 0
            )
        ]
    if not loc.fs.isdir(loc.path):
        raise FileNotFoundError(f"input {uri} is not a folder (input-type uriFolder)")
    found = loc.fs.find(loc.path, detail=True)
    prefix = loc.path.rstrip("/") + "/"
    files = [
        InputFile(
            uri=loc.full_uri(path),
            name=path[len(prefix) :] if path.startswith(prefix) else path,
            size=info.get("size") or 0,
        )
        for path, info in found.items()
        if info.get("type") == "file"
    ]
    return sorted(files, key=lambda f: f.name)
