"""Where media files (avatars) live.

Services and routers only see `MediaStorage`; `LocalMediaStorage` keeps files in a
directory (MEDIA_ROOT). An object-store backend implements the same three methods and is
chosen in `create_media_storage` without touching routers or services.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Protocol

from app.core.config import Settings

FILE_MODE = 0o644


class MediaStorage(Protocol):
    async def save(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name`` (a relative POSIX path), all or nothing."""

    async def read(self, name: str) -> bytes | None:
        """The stored bytes, or None when there is no such (or no valid) name."""

    async def delete(self, name: str) -> None:
        """Remove ``name``; a missing file is not an error."""


class InvalidMediaName(ValueError):
    pass


def check_name(name: str) -> PurePosixPath:
    """A relative path of plain segments: no absolute path, '..', backslash or control char."""
    path = PurePosixPath(name)
    if (
        not name
        or len(name) > 255
        or path.is_absolute()
        or "\\" in name
        or any(ord(char) < 32 or ord(char) == 127 for char in name)
        or any(part in ("", ".", "..") or part.startswith(".") for part in name.split("/"))
    ):
        raise InvalidMediaName(name)
    return path


class LocalMediaStorage:
    """Files under ``root``. Writes are atomic: a temporary file in the target directory,
    flushed to disk, then renamed over the final name; readers never see half a file."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, name: str) -> Path:
        path = self.root.joinpath(*check_name(name).parts)
        if not path.resolve().is_relative_to(self.root):  # a symlink pointing outside
            raise InvalidMediaName(name)
        return path

    async def save(self, name: str, data: bytes) -> None:
        await asyncio.to_thread(self._save, self.path(name), data)

    async def read(self, name: str) -> bytes | None:
        try:
            path = self.path(name)
        except InvalidMediaName:
            return None
        return await asyncio.to_thread(_read_or_none, path)

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self._delete, self.path(name))

    @staticmethod
    def _save(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, FILE_MODE)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    @staticmethod
    def _delete(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def create_media_storage(settings: Settings) -> MediaStorage:
    return LocalMediaStorage(settings.media_root)
