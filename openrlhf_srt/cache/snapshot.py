"""Snapshot files of a TreeCache: what was inserted, not the trees themselves.

A snapshot stores the configuration, the cached prompts (least recently used first) and
every registered sequence (id, prompt key, step, tag, running flag, response tokens).
Loading re-inserts them, which rebuilds trees identical to the saved ones (the canonical
tree depends only on the multiset of texts), so drafts after load equal drafts before.
Sequences detached by eviction are not saved.

Layout (little-endian), version 1:
    b"SRTCACHE"  u32 version  u32 header_len  header (JSON: config, counts)
    u64 prompt_keys[P]  u32 prompt_lens[P]  i32 prompt_tokens[sum prompt_lens]
    i64 seq_ids[S]  u64 seq_keys[S]  i64 steps[S]  u8 tags[S]  u8 running[S]
    u32 response_lens[S]  i32 response_tokens[sum response_lens]
    32-byte BLAKE2b digest of everything before it
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np

from openrlhf_srt.cache.cache import TAGS, TreeCache
from openrlhf_srt.cache.config import CacheConfig

MAGIC = b"SRTCACHE"
VERSION = 1
_DIGEST = 32
_ARRAYS = (  # name, dtype, length field in the header
    ("prompt_keys", "<u8", "prompts"), ("prompt_lens", "<u4", "prompts"),
    ("prompt_tokens", "<i4", "prompt_tokens"),
    ("seq_ids", "<i8", "seqs"), ("seq_keys", "<u8", "seqs"), ("steps", "<i8", "seqs"),
    ("tags", "u1", "seqs"), ("running", "u1", "seqs"), ("response_lens", "<u4", "seqs"),
    ("response_tokens", "<i4", "response_tokens"),
)


def save(cache: TreeCache, path: str | os.PathLike) -> None:
    """Write `cache` to `path` atomically (a temp file in the same folder, then os.replace)."""
    prompts, seqs = cache._c.export_state()
    arrays = {
        "prompt_keys": [k for k, _ in prompts], "prompt_lens": [len(t) for _, t in prompts],
        "prompt_tokens": np.concatenate([t for _, t in prompts]) if prompts else [],
        "seq_ids": [s[0] for s in seqs], "seq_keys": [s[1] for s in seqs],
        "steps": [s[2] for s in seqs], "tags": [s[3] for s in seqs],
        "running": [int(s[4]) for s in seqs], "response_lens": [len(s[5]) for s in seqs],
        "response_tokens": np.concatenate([s[5] for s in seqs]) if seqs else [],
    }
    header = {
        "config": cache.config.__dict__,
        "prompts": len(prompts), "seqs": len(seqs),
        "prompt_tokens": int(sum(arrays["prompt_lens"])),
        "response_tokens": int(sum(arrays["response_lens"])),
    }
    hdr = json.dumps(header, sort_keys=True).encode()
    parts = [MAGIC, struct.pack("<II", VERSION, len(hdr)), hdr]
    parts += [np.asarray(arrays[name], dtype=dt).tobytes() for name, dt, _ in _ARRAYS]
    body = b"".join(parts)
    digest = hashlib.blake2b(body, digest_size=_DIGEST).digest()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(body)
            f.write(digest)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _parse(data: bytes, path) -> tuple[dict, dict]:
    def bad(why: str) -> ValueError:
        return ValueError(f"{path}: not a valid tree-cache snapshot: {why}")

    if len(data) < len(MAGIC) + 8 + _DIGEST or data[: len(MAGIC)] != MAGIC:
        raise bad("missing magic header (wrong file type or truncated)")
    version, hlen = struct.unpack_from("<II", data, len(MAGIC))
    if version != VERSION:
        raise ValueError(f"{path}: snapshot format version {version} is not supported "
                         f"(this build reads version {VERSION})")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.blake2b(body, digest_size=_DIGEST).digest() != digest:
        raise bad("checksum mismatch (file corrupt or truncated)")
    off = len(MAGIC) + 8
    try:
        header = json.loads(body[off : off + hlen])
        counts = {k: int(header[k]) for k in ("prompts", "seqs", "prompt_tokens",
                                                "response_tokens")}
    except (ValueError, KeyError, TypeError) as e:
        raise bad(f"unreadable header ({e})") from None
    off += hlen
    arrays = {}
    for name, dt, n in _ARRAYS:
        size = np.dtype(dt).itemsize * counts[n]
        if off + size > len(body):
            raise bad(f"array {name} runs past the end")
        arrays[name] = np.frombuffer(body, dtype=dt, count=counts[n], offset=off).copy()
        off += size
    if off != len(body):
        raise bad("unexpected trailing bytes")
    if arrays["prompt_lens"].sum() != counts["prompt_tokens"] or (
        arrays["response_lens"].sum() != counts["response_tokens"]
    ):
        raise bad("lengths do not add up")
    return header, arrays


def load(path: str | os.PathLike) -> TreeCache:
    """Read a snapshot written by `save`; raises ValueError if it is not a valid one."""
    data = Path(path).read_bytes()
    header, a = _parse(data, path)
    try:
        cache = TreeCache(CacheConfig(**header["config"]))
    except TypeError as e:
        raise ValueError(f"{path}: snapshot config not understood ({e})") from None
    prompts = {}
    pos = 0
    for key, n in zip(a["prompt_keys"].tolist(), a["prompt_lens"].tolist()):
        prompts[key] = a["prompt_tokens"][pos : pos + n]
        pos += n
    pos = 0
    for i in range(len(a["seq_ids"])):  # prompts come least recently used first
        n = int(a["response_lens"][i])
        key = int(a["seq_keys"][i])
        if key not in prompts or a["tags"][i] >= len(TAGS):
            raise ValueError(f"{path}: not a valid tree-cache snapshot: sequence {i} is inconsistent")
        sid = int(a["seq_ids"][i])
        cache.add_sequence(sid, key, prompts[key], step=int(a["steps"][i]), tag=TAGS[a["tags"][i]])
        cache.extend(sid, a["response_tokens"][pos : pos + n])
        pos += n
        if not a["running"][i]:
            cache.finish_sequence(sid)
    return cache
