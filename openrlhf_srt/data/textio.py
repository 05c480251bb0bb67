"""Text files that may be gzipped (`.gz`), opened and read the same way by every reader and
writer. Reading errors name the file and the line (`TextFileError`, a ValueError): a gzip
stream that is truncated or corrupt, bytes that are not UTF-8, JSON nested too deeply."""

from __future__ import annotations

import gzip
import json
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# what reading a damaged .gz or non-UTF-8 file raises, without naming the file
_READ_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError)


class TextFileError(ValueError):
    """A file that cannot be read as (gzipped) UTF-8 text; the message starts with the file
    (and line)."""


def make_writable_dir(path: Path) -> None:
    """Create the folder (and its parents) and write a file in it (removed): OSError if
    either fails, so a run can refuse a folder at start rather than at its first write."""
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
        pass


def _gzipped(path: Path) -> bool:
    return Path(path).name.lower().endswith(".gz")


def open_text(path: Path, mode: str = "r", *, gzipped: bool | None = None,
              compresslevel: int = 9):
    """UTF-8 text in `mode` "r" or "w"; gzip when the name ends in .gz (any case) or when
    `gzipped` says so (a file written under a temporary name)."""
    if _gzipped(path) if gzipped is None else gzipped:
        return gzip.open(path, mode + "t", encoding="utf-8", compresslevel=compresslevel)
    return open(path, mode, encoding="utf-8")


def _why(e: Exception) -> str:
    if isinstance(e, EOFError):
        return "the gzip stream ends early (a truncated file)"
    if isinstance(e, UnicodeDecodeError):
        return f"not UTF-8 text (byte 0x{e.object[e.start]:02x}: {e.reason})"
    return f"not a valid gzip file ({e})"


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line of a UTF-8 file, gunzipped when the name ends in
    .gz; a damaged file raises TextFileError naming the file and the line it reached."""
    path = Path(path)
    lineno = 0
    with (gzip.open(path, "rb") if _gzipped(path) else open(path, "rb")) as f:
        while True:
            try:
                raw = f.readline()
            except _READ_ERRORS as e:
                raise TextFileError(f"{path}:{lineno + 1}: {_why(e)}") from None
            if not raw:
                return
            lineno += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TextFileError(f"{path}:{lineno}: {_why(e)}") from None
            yield lineno, text


def read_text(path: str | Path) -> str:
    """A whole UTF-8 file, gunzipped when the name ends in .gz; errors as in text_lines."""
    path = Path(path)
    with (gzip.open(path, "rb") if _gzipped(path) else open(path, "rb")) as f:
        try:
            data = f.read()
        except _READ_ERRORS as e:
            raise TextFileError(f"{path}: {_why(e)}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise TextFileError(f"{path}:{line}: {_why(e)}") from None


def parse_json(text: str) -> Any:
    """json.loads, whose failures (a syntax error, nesting beyond the recursion limit) are
    a ValueError saying why; the caller adds the file and line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError("not valid JSON (nested too deeply to read)") from None
