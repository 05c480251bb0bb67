"""Text files that may be gzipped (`.gz`), opened the same way by every reader and writer."""

from __future__ import annotations

import gzip
from pathlib import Path


def open_text(path: Path, mode: str = "r"):
    """UTF-8 text in `mode` "r" or "w"; gzip when the name ends in .gz (any case)."""
    if Path(path).name.lower().endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")
