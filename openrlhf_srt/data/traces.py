"""Rollout traces: one JSON object per finished sample (format in docs/traces.md).

Traces are what benchmarks and the replay simulator consume. The reader validates every
line and reports the file and line number of the first malformed one (a damaged gzip stream
or bytes that are not UTF-8 too: `data.textio`); it accepts the
project's reference traces (tests/reference_traces/, which carry `prompt_id` instead of `prompt_key`)
by deriving the key from the prompt token ids.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from openrlhf_srt.cache.keys import check_token_ids
from openrlhf_srt.cache.keys import prompt_key as compute_prompt_key
from openrlhf_srt.data.textio import open_text, parse_json, text_lines

FINISH_REASONS = ("stop", "length", "abort")
TRACE_VERSION = 1


class TraceFormatError(ValueError):
    """A trace line that does not follow docs/traces.md; the message names file and line."""


@dataclass(frozen=True)
class TraceRecord:
    step: int
    prompt_key: int
    prompt_token_ids: list[int]
    sample_index: int
    response_token_ids: list[int]
    finish_reason: str
    policy_version: int
    # Optional fields: a label for the reward, the sample's reward, whether it was run-ahead.
    label: str | None = None
    reward: float | None = None
    tag: str = "rollout"
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        if not d["extra"]:
            d.pop("extra")
        return json.dumps(d, separators=(",", ":"))


def _int_list(value, name: str) -> list[int]:
    if not isinstance(value, list):
        raise ValueError(  # noqa: TRY004 - ValueError is the reader's contract
            f"'{name}' must be a list of token ids, got {type(value).__name__}")
    if not all(type(t) is int for t in value):  # JSON true/false and 1.0 are not token ids
        raise ValueError(f"'{name}' must be a list of integer token ids")
    try:
        check_token_ids(value)
    except ValueError as e:
        raise ValueError(f"'{name}': {e}") from None
    return value


def _int(value, name: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"'{name}' must be an integer >= {minimum}, got {value!r}")
    return value


def parse_record(obj: dict) -> TraceRecord:
    """Validate one decoded JSON object; raises ValueError saying which field is wrong."""
    if not isinstance(obj, dict):
        raise ValueError("a trace line must be a JSON object")
    for name in ("step", "prompt_token_ids", "sample_index", "response_token_ids", "finish_reason"):
        if name not in obj:
            raise ValueError(f"missing field '{name}'")
    prompt_ids = _int_list(obj["prompt_token_ids"], "prompt_token_ids")
    if not prompt_ids:
        raise ValueError("'prompt_token_ids' is empty")
    key = obj.get("prompt_key")
    expected = compute_prompt_key(prompt_ids)
    if key is None:
        key = expected  # reference traces name prompts by prompt_id only
    elif _int(key, "prompt_key") != expected:
        raise ValueError(f"'prompt_key' {key} is not the hash of prompt_token_ids ({expected})")
    reason = obj["finish_reason"]
    if reason not in FINISH_REASONS:
        raise ValueError(f"'finish_reason' must be one of {FINISH_REASONS}, got {reason!r}")
    reward = obj.get("reward")
    if reward is not None and not isinstance(reward, (int, float)):
        raise ValueError(f"'reward' must be a number or null, got {reward!r}")
    tag = obj.get("tag", "rollout")
    if tag not in ("rollout", "runahead"):
        raise ValueError(f"'tag' must be 'rollout' or 'runahead', got {tag!r}")
    known = {f for f in TraceRecord.__dataclass_fields__ if f != "extra"}
    extra = {k: v for k, v in obj.items() if k not in known and k != "extra"}
    extra.update(obj.get("extra") or {})
    return TraceRecord(
        step=_int(obj["step"], "step"),
        prompt_key=key,
        prompt_token_ids=prompt_ids,
        sample_index=_int(obj["sample_index"], "sample_index"),
        response_token_ids=_int_list(obj["response_token_ids"], "response_token_ids"),
        finish_reason=reason,
        policy_version=_int(obj.get("policy_version", obj["step"]), "policy_version"),
        label=obj.get("label"),
        reward=None if reward is None else float(reward),
        tag=tag,
        extra=extra,
    )


def iter_numbered_traces(path: str | os.PathLike) -> Iterator[tuple[int, TraceRecord]]:
    """(line number, record) of every record of a .jsonl or .jsonl.gz trace file, validating
    every line (for readers that report a later inconsistency by file and line)."""
    path = Path(path)
    for lineno, line in text_lines(path):
        if not line.strip():
            continue
        try:
            record = parse_record(parse_json(line))
        except ValueError as e:
            raise TraceFormatError(f"{path}:{lineno}: {e}") from None
        yield lineno, record


def iter_traces(path: str | os.PathLike) -> Iterator[TraceRecord]:
    """Yield the records of a .jsonl or .jsonl.gz trace file, validating every line."""
    for _, record in iter_numbered_traces(path):
        yield record


def read_traces(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[TraceRecord]:
    """Read one or more trace files into a list, in file order."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return [rec for p in paths for rec in iter_traces(p)]


class TraceWriter:
    """Appends records to a trace file; the file is complete up to the last flushed line."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open_text(self.path, "w")

    def write(self, record: TraceRecord) -> None:
        self._f.write(record.to_json() + "\n")

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
