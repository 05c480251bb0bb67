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
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from openrlhf_srt.cache.keys import check_token_ids
from openrlhf_srt.cache.keys import prompt_key as compute_prompt_key
from openrlhf_srt.data.textio import make_writable_dir, open_text, parse_json, text_lines

FINISH_REASONS = ("stop", "length", "abort")
# vLLM's other finish reasons, as a trace names them: `error` (a request-level failure) ended
# the request as an abort would; `repetition` is a stop rule of the engine
_FINISH_AS = {"error": "abort", "repetition": "stop"}
TRACE_VERSION = 1
# A training run's traces: one file per step (StepTraceWriter), in the trace directory or
# one folder down (an OpenRLHF engine actor's engine<i>/); written as <name>.tmp until the
# step ends, and only whole files match.
STEP_FILE = re.compile(r"step_(\d+)\.jsonl(?:\.gz)?")
TMP_SUFFIX = ".tmp"
# gzip level of the step files: level 1 writes 1.6-5x faster than zlib's default 6 for a
# size larger by 14-50% (tools/bench_trace_write.py; docs/traces.md, "Recording from
# training runs"): an engine actor writes on its event loop, so speed comes first
STEP_FILE_COMPRESSLEVEL = 1


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
        # a shallow dict: dataclasses.asdict would copy the token lists element by element
        d = {name: getattr(self, name) for name in self.__dataclass_fields__}
        if not d["extra"]:
            d.pop("extra")
        return json.dumps(d, separators=(",", ":"))


def trace_finish_reason(reason: str | None) -> str:
    """vLLM's finish reason of an output as a trace's (None, still running: `abort`)."""
    reason = None if reason is None else str(reason)
    if reason in FINISH_REASONS:
        return reason
    return _FINISH_AS.get(reason, "abort")


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
    known = set(TraceRecord.__dataclass_fields__)
    extra = {k: v for k, v in obj.items() if k not in known}
    if not isinstance(obj.get("extra") or {}, dict):
        raise ValueError(  # noqa: TRY004 - ValueError is the reader's contract
            f"'extra' must be an object, got {obj['extra']!r}")
    extra.update(obj.get("extra") or {})  # what TraceRecord.to_json wrote
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
    """Read one or more trace files or directories (`trace_files`) into a list, in order."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return [rec for p in paths for f in trace_files(p) for rec in iter_traces(f)]


def step_file_name(step: int) -> str:
    return f"step_{step:06d}.jsonl.gz"


def _natural(text: str) -> list:
    """'engine10' after 'engine2'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def trace_files(path: str | os.PathLike) -> list[Path]:
    """A trace file as itself; a trace directory (a training run's, docs/traces.md) as its
    step files, in the directory and one folder down (engine0/, engine1/, ...), in step
    order, folders in natural order within a step. A step still being written (.tmp) is
    left out. FileNotFoundError when the path is missing or the directory has no step file."""
    path = Path(path)
    if not path.is_dir():
        if not path.is_file():
            raise FileNotFoundError(f"trace file not found: {path}")
        return [path]
    found = []
    for f in [*path.iterdir(), *(g for d in path.iterdir() if d.is_dir() for g in d.iterdir())]:
        m = STEP_FILE.fullmatch(f.name)
        if m and f.is_file():
            found.append((int(m.group(1)), _natural(str(f.parent.relative_to(path))), f))
    if not found:
        raise FileNotFoundError(f"{path}: no trace step files (step_NNNNNN.jsonl.gz) in the "
                                "directory or its folders")
    return [f for *_, f in sorted(found)]


def check_trace_dir(path: str | os.PathLike, flag: str) -> Path:
    """The trace directory as an absolute path (engine actors do not share the caller's
    working folder), created and tried for writing; ValueError naming `flag` if it cannot be."""
    resolved = Path(path).expanduser().resolve()
    try:
        make_writable_dir(resolved)
    except OSError as e:
        raise ValueError(f"{flag} {path}: trace files cannot be written there "
                         f"({e.strerror or e})") from None
    return resolved


class TraceWriter:
    """Appends records to a trace file; the file is complete up to the last flushed line.

    atomic: written as `<path>.tmp`, renamed to `path` by close(), so `path` only ever
    holds a whole file (a process that dies first leaves the .tmp; leaving the `with` block
    on an exception removes it)."""

    def __init__(self, path: str | os.PathLike, *, atomic: bool = False,
                 compresslevel: int = 9):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._target = self.path.with_name(self.path.name + TMP_SUFFIX) if atomic else self.path
        self._f = open_text(self._target, "w", gzipped=self.path.name.lower().endswith(".gz"),
                            compresslevel=compresslevel)

    def write(self, record: TraceRecord) -> None:
        self._f.write(record.to_json() + "\n")

    def close(self) -> None:
        if self._f.closed:
            return
        self._f.close()
        if self._target != self.path:
            os.replace(self._target, self.path)

    def discard(self) -> None:
        """Close without publishing: an atomic writer's .tmp is removed."""
        self._f.close()
        if self._target != self.path:
            self._target.unlink(missing_ok=True)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and self._target != self.path:
            self.discard()
        else:
            self.close()


class StepTraceWriter:
    """A training run's trace records, one gzip file per step: `directory/step_000012.jsonl.gz`.

    A step's file is written under a .tmp name and renamed by `end_step`, so only steps that
    ended (with a record) have a file: a run that dies mid-step leaves every earlier step's file whole
    (trace_files skips the .tmp; the step redone after a resume writes its file anew), and a
    step left open by an error is dropped by the next `begin_step` or by `close`. `records`
    and `seconds` (encoding and writing, the recording's cost) count since the last
    `take_counts()`."""

    def __init__(self, directory: str | os.PathLike,
                 compresslevel: int = STEP_FILE_COMPRESSLEVEL):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.compresslevel = compresslevel
        self.step: int | None = None
        self._writer: TraceWriter | None = None
        self._step_records = 0  # records of the open step
        self.records = 0
        self.seconds = 0.0

    def begin_step(self, step: int) -> None:
        """Start step `step`'s file (a step still open, cut short by an error, is dropped)."""
        self._drop_open_step()
        start = time.perf_counter()
        self._writer = TraceWriter(self.directory / step_file_name(step), atomic=True,
                                   compresslevel=self.compresslevel)
        self.step = step
        self._step_records = 0
        self.seconds += time.perf_counter() - start

    def write(self, record: TraceRecord) -> None:
        if self._writer is None:
            raise RuntimeError("StepTraceWriter.write outside a step (begin_step first)")
        start = time.perf_counter()
        self._writer.write(record)
        self.records += 1
        self._step_records += 1
        self.seconds += time.perf_counter() - start

    def end_step(self) -> Path | None:
        """Publish the open step's file; returns its path (None: no step was open, or it
        has no record, so no file: e.g. OpenRLHF's round that finds the epoch's prompts
        used up)."""
        if self._writer is None:
            return None
        start = time.perf_counter()
        writer, self._writer, self.step = self._writer, None, None
        if self._step_records:
            writer.close()
        else:
            writer.discard()
        self.seconds += time.perf_counter() - start
        return writer.path if self._step_records else None

    def take_counts(self) -> dict[str, float]:
        """{"records", "seconds"} since the last call, then reset."""
        counts = {"records": float(self.records), "seconds": self.seconds}
        self.records, self.seconds = 0, 0.0
        return counts

    def _drop_open_step(self) -> None:
        if self._writer is not None:
            self._writer.discard()
            self._writer, self.step = None, None

    def close(self) -> None:
        """Drop a step that did not end (its .tmp is removed); ended steps are on disk."""
        self._drop_open_step()
