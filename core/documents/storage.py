"""Where document bytes live: one small interface, two backends.

A blob is named by its document and a short name: ``original`` (the upload),
``document.pdf`` (an Office file converted), ``p<n>-<width>.jpg`` (page images).

- `DatabaseBlobStore` (the default) keeps bytes in `document_blobs`, in 1 MiB
  chunks. Every process reaches the database, so web and worker need no shared
  disk — which Heroku does not have (dynos' filesystems are ephemeral and
  private) — and a page's images commit in the same transaction as its row. One
  backup holds everything; deleting a document (or its team) removes its bytes
  by foreign-key cascade. The cost is database size: about 0.3 MB per rendered
  page plus the original, which is why the other backend exists.
- `FilesystemBlobStore` keeps files under a folder (`SIGHTLINE_DOCUMENT_STORAGE`
  set to an absolute path, or `filesystem` for `var/documents`). Only for one
  machine running every process.

An S3-compatible store is one more subclass: `put_file` uploads to
``documents/<id>/<name>``, `iter_chunks` streams a GET, `delete_document`
deletes the prefix; `session` is ignored, like the filesystem store does.

Must never: read a whole large blob into memory when streaming it out
(`iter_chunks` yields ≤ 1 MiB at a time), or accept a blob name that could
escape its folder.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import IO

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from config import get_settings
from core.db import session_scope
from core.models import DocumentBlob

CHUNK_BYTES = 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class BlobNotFoundError(LookupError):
    """No blob with that document and name."""


def check_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"blob name: {name!r} is not a plain file name")
    return name


class BlobStore(ABC):
    """Bytes by (document id, name). Writes are idempotent: a second put replaces."""

    @abstractmethod
    def put_file(self, session: Session, document_id: int, name: str, source: IO[bytes]) -> int:
        """Store everything `source` yields; returns the byte count.

        The database store writes in `session` (the caller commits); others write
        at once and ignore it.
        """

    def put(self, session: Session, document_id: int, name: str, data: bytes) -> int:
        return self.put_file(session, document_id, name, io.BytesIO(data))

    def put_many(self, session: Session, document_id: int, blobs: dict[str, bytes]) -> None:
        """Store several small blobs (page images) at once."""
        for name, data in blobs.items():
            self.put(session, document_id, name, data)

    @abstractmethod
    def iter_chunks(self, document_id: int, name: str) -> Iterator[bytes]:
        """The blob's bytes in pieces of at most 1 MiB. Raises BlobNotFoundError."""

    def get(self, document_id: int, name: str) -> bytes:
        return b"".join(self.iter_chunks(document_id, name))

    def copy_to(self, document_id: int, name: str, path: Path) -> int:
        """Write the blob to a local file; returns its size."""
        size = 0
        with path.open("wb") as target:
            for chunk in self.iter_chunks(document_id, name):
                target.write(chunk)
                size += len(chunk)
        return size

    @abstractmethod
    def delete_document(self, session: Session, document_id: int) -> None:
        """Remove every blob of a document."""


class DatabaseBlobStore(BlobStore):
    def put_file(self, session: Session, document_id: int, name: str, source: IO[bytes]) -> int:
        check_name(name)
        session.execute(
            delete(DocumentBlob).where(
                DocumentBlob.document_id == document_id, DocumentBlob.name == name
            )
        )
        size = 0
        seq = 0
        while True:
            chunk = source.read(CHUNK_BYTES)
            if not chunk and seq > 0:
                break
            session.add(DocumentBlob(document_id=document_id, name=name, seq=seq, data=chunk))
            size += len(chunk)
            seq += 1
            if not chunk:
                break
        session.flush()
        return size

    def put_many(self, session: Session, document_id: int, blobs: dict[str, bytes]) -> None:
        # One DELETE and one multi-row INSERT for the lot: round trips, not bytes, dominate.
        names = [check_name(name) for name in blobs]
        session.execute(
            delete(DocumentBlob).where(
                DocumentBlob.document_id == document_id, DocumentBlob.name.in_(names)
            )
        )
        rows = [
            {
                "document_id": document_id,
                "name": name,
                "seq": seq,
                "data": data[at : at + CHUNK_BYTES],
            }
            for name, data in blobs.items()
            for seq, at in enumerate(range(0, max(len(data), 1), CHUNK_BYTES))
        ]
        if rows:
            session.execute(insert(DocumentBlob), rows)

    def iter_chunks(self, document_id: int, name: str) -> Iterator[bytes]:
        check_name(name)
        # A query per chunk: nothing larger than a chunk is held, no cursor stays open.
        with session_scope() as session:
            count = session.scalar(
                select(func.count()).where(
                    DocumentBlob.document_id == document_id, DocumentBlob.name == name
                )
            )
        if not count:
            raise BlobNotFoundError(f"document {document_id} has no blob {name}")
        return self._chunks(document_id, name, int(count))

    @staticmethod
    def _chunks(document_id: int, name: str, count: int) -> Iterator[bytes]:
        for seq in range(count):
            with session_scope() as session:
                data = session.scalar(
                    select(DocumentBlob.data).where(
                        DocumentBlob.document_id == document_id,
                        DocumentBlob.name == name,
                        DocumentBlob.seq == seq,
                    )
                )
            if data is None:
                raise BlobNotFoundError(f"document {document_id} blob {name} lost chunk {seq}")
            yield bytes(data)

    def delete_document(self, session: Session, document_id: int) -> None:
        session.execute(delete(DocumentBlob).where(DocumentBlob.document_id == document_id))


class FilesystemBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, document_id: int, name: str) -> Path:
        return self.root / str(int(document_id)) / check_name(name)

    def put_file(self, session: Session, document_id: int, name: str, source: IO[bytes]) -> int:
        path = self._path(document_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        # Written aside then renamed: a reader never sees half a file.
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as tmp:
            try:
                while chunk := source.read(CHUNK_BYTES):
                    tmp.write(chunk)
                    size += len(chunk)
            except BaseException:
                os.unlink(tmp.name)
                raise
        os.replace(tmp.name, path)
        return size

    def iter_chunks(self, document_id: int, name: str) -> Iterator[bytes]:
        path = self._path(document_id, name)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise BlobNotFoundError(f"document {document_id} has no blob {name}") from None
        return self._read(handle)

    @staticmethod
    def _read(handle: IO[bytes]) -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk

    def delete_document(self, session: Session, document_id: int) -> None:
        shutil.rmtree(self.root / str(int(document_id)), ignore_errors=True)


def make_blob_store(storage: str) -> BlobStore:
    if storage == "database":
        return DatabaseBlobStore()
    return FilesystemBlobStore(Path(storage))


@lru_cache(maxsize=1)
def _cached(storage: str) -> BlobStore:
    return make_blob_store(storage)


def get_blob_store() -> BlobStore:
    """The store the settings name (`SIGHTLINE_DOCUMENT_STORAGE`)."""
    return _cached(get_settings().documents.storage)
