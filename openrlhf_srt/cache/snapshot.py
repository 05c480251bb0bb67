"""Snapshot files: a codec for ``CacheState`` (``TreeCache.export_state`` / ``from_state``).

A snapshot stores what was inserted, not the trees: the configuration, the cached prompts
(least recently used first) and every registered sequence (id, prompt key, step, tag,
running flag, response tokens), i.e. the arrays of a ``CacheState`` (loaded, every sequence
is restored finished: ``TreeCache.from_state``). ``TreeCache.save`` and
``TreeCache.load`` write and read them with ``write`` and ``read``.

Layout (little-endian), version 1:
    b"SRTCACHE"  u32 version  u32 header_len  header (JSON: config, counts)
    u64 prompt_keys[P]  u32 prompt_lens[P]  i32 prompt_tokens[sum prompt_lens]
    i64 seq_ids[S]  u64 seq_keys[S]  i64 steps[S]  u8 tags[S]  u8 running[S]
    u32 response_lens[S]  i32 response_tokens[sum response_lens]
    32-byte BLAKE2b digest of everything before it

Decoding checks the framing (magic, version, digest, sizes); whether the arrays make a
consistent cache is checked by ``TreeCache.from_state``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np

from openrlhf_srt.cache.cache_config import CacheConfig
from openrlhf_srt.cache.state import CacheState

MAGIC = b"SRTCACHE"
VERSION = 1
_DIGEST = 32
_ARRAYS = (  # in file order: name, dtype on disk, header count giving its length
    ("prompt_keys", "<u8", "prompts"), ("prompt_lens", "<u4", "prompts"),
    ("prompt_tokens", "<i4", "prompt_tokens"),
    ("seq_ids", "<i8", "seqs"), ("seq_keys", "<u8", "seqs"), ("steps", "<i8", "seqs"),
    ("tags", "u1", "seqs"), ("running", "u1", "seqs"), ("response_lens", "<u4", "seqs"),
    ("response_tokens", "<i4", "response_tokens"),
)
_COUNTED_BY = {"prompts": "prompt_keys", "seqs": "seq_ids", "prompt_tokens": "prompt_tokens",
               "response_tokens": "response_tokens"}


def encode(state: CacheState) -> bytes:
    """The snapshot bytes of `state`."""
    arrays = state.arrays()
    counts = {count: len(arrays[name]) for count, name in _COUNTED_BY.items()}
    for name, _, count in _ARRAYS:
        if len(arrays[name]) != counts[count]:
            raise ValueError(f"state array {name} has {len(arrays[name])} entries, "
                             f"{counts[count]} expected")
    header = {"config": dataclasses.asdict(state.config), **counts}
    hdr = json.dumps(header, sort_keys=True).encode()
    parts = [MAGIC, struct.pack("<II", VERSION, len(hdr)), hdr]
    parts += [np.asarray(arrays[name], dtype=dt).tobytes() for name, dt, _ in _ARRAYS]
    body = b"".join(parts)
    return body + hashlib.blake2b(body, digest_size=_DIGEST).digest()


def decode(data: bytes, where: str = "snapshot") -> CacheState:
    """The state in snapshot bytes; ValueError naming `where` if they are not a valid one."""

    def bad(why: str) -> ValueError:
        return ValueError(f"{where}: not a valid tree-cache snapshot: {why}")

    if len(data) < len(MAGIC) + 8 + _DIGEST or data[: len(MAGIC)] != MAGIC:
        raise bad("missing magic header (wrong file type or truncated)")
    version, hlen = struct.unpack_from("<II", data, len(MAGIC))
    if version != VERSION:
        raise ValueError(f"{where}: snapshot format version {version} is not supported "
                         f"(this build reads version {VERSION})")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.blake2b(body, digest_size=_DIGEST).digest() != digest:
        raise bad("checksum mismatch (file corrupt or truncated)")
    off = len(MAGIC) + 8
    try:
        header = json.loads(body[off : off + hlen])
        counts = {k: int(header[k]) for k in _COUNTED_BY}
        config = header["config"]
    except (ValueError, KeyError, TypeError) as e:
        raise bad(f"unreadable header ({e})") from None
    off += hlen
    arrays = {}
    for name, dt, n in _ARRAYS:
        size = np.dtype(dt).itemsize * counts[n]
        if counts[n] < 0 or off + size > len(body):
            raise bad(f"array {name} runs past the end")
        arrays[name] = np.frombuffer(body, dtype=dt, count=counts[n], offset=off).copy()
        off += size
    if off != len(body):
        raise bad("unexpected trailing bytes")
    try:
        config = CacheConfig(**config)
    except (TypeError, ValueError) as e:
        raise bad(f"config not understood ({e})") from None
    return CacheState(config=config, **arrays)


def write(state: CacheState, path: str | os.PathLike) -> None:
    """Write `state` to `path` atomically (a temp file in the same folder, fsync, then
    os.replace): a crash leaves the old file or the new one."""
    data = encode(state)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read(path: str | os.PathLike) -> CacheState:
    """The state in a snapshot file written by `write`; ValueError if it is not a valid one."""
    return decode(Path(path).read_bytes(), str(path))
