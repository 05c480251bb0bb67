"""Trace files streamed one training step at a time, each step as flat numpy arrays.

The replay never holds a whole trace: records are read in file order, which must be step
order (a step that goes backwards is an error naming the file and line), and a step is
handed on as soon as the first record of the next step arrives. A step's responses and
prompts are concatenated int32 arrays with offsets (CSR), so the round loop gathers and
compares tokens with numpy, and a step costs 4 bytes per token plus a few per record.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openrlhf_srt.data.traces import (
    TraceFormatError,
    TraceRecord,
    iter_numbered_traces,
    trace_files,
)


@dataclass(frozen=True)
class StepRecords:
    """The records of one training step, prompts in order of first appearance in the file
    and samples by index within a prompt (one engine batch in the replay)."""

    step: int
    prompt_keys: np.ndarray  # uint64, one per record
    sample_index: np.ndarray  # int64, one per record
    prompts: np.ndarray  # int32, every record's prompt one after another
    prompt_offsets: np.ndarray  # int64, len(records) + 1
    responses: np.ndarray  # int32, every record's response one after another
    response_offsets: np.ndarray  # int64, len(records) + 1

    def __len__(self) -> int:
        return len(self.prompt_keys)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.response_offsets)

    @property
    def tokens(self) -> int:
        return int(self.response_offsets[-1])

    def prompt(self, i: int) -> np.ndarray:
        return self.prompts[self.prompt_offsets[i]:self.prompt_offsets[i + 1]]

    def response(self, i: int) -> np.ndarray:
        return self.responses[self.response_offsets[i]:self.response_offsets[i + 1]]

    def prompt_order(self) -> list[int]:
        """The step's prompt keys, each once, in batch order."""
        keys = self.prompt_keys.tolist()
        return list(dict.fromkeys(keys))

    def select(self, index) -> StepRecords:
        """The records at ``index`` (ascending batch positions) as a step of their own."""
        idx = np.asarray(index, dtype=np.int64)

        def take(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            lens = np.diff(offsets)[idx]
            out_off = np.zeros(idx.size + 1, dtype=np.int64)
            np.cumsum(lens, out=out_off[1:])
            starts = np.repeat(offsets[idx] - out_off[:-1], lens)
            return data[np.arange(out_off[-1]) + starts], out_off

        prompts, p_off = take(self.prompts, self.prompt_offsets)
        responses, r_off = take(self.responses, self.response_offsets)
        return StepRecords(self.step, self.prompt_keys[idx], self.sample_index[idx], prompts,
                           p_off, responses, r_off)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.prompt_keys, self.sample_index, self.prompts,
                                      self.prompt_offsets, self.responses,
                                      self.response_offsets))


class _StepBuilder:
    def __init__(self, step: int):
        self.step = step
        self.rows: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        self.seen: set[tuple[int, int]] = set()

    def add(self, key: int, sample: int, prompt, response, where: str) -> None:
        if (key, sample) in self.seen:
            raise TraceFormatError(f"{where}: duplicate record: step {self.step}, prompt key "
                                   f"{key}, sample {sample}")
        self.seen.add((key, sample))
        self.rows.append((key, sample, np.asarray(prompt, dtype=np.int32),
                          np.asarray(response, dtype=np.int32)))

    def build(self) -> StepRecords:
        first: dict[int, int] = {}
        for key, *_ in self.rows:
            first.setdefault(key, len(first))
        rows = sorted(self.rows, key=lambda r: (first[r[0]], r[1]))

        def flat(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
            offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
            np.cumsum([len(a) for a in arrays], out=offsets[1:])
            data = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
            return data.astype(np.int32, copy=False), offsets

        prompts, p_off = flat([r[2] for r in rows])
        responses, r_off = flat([r[3] for r in rows])
        return StepRecords(self.step, np.array([r[0] for r in rows], dtype=np.uint64),
                           np.array([r[1] for r in rows], dtype=np.int64), prompts, p_off,
                           responses, r_off)


def iter_steps(path: str | os.PathLike, prompts: int = 0) -> Iterator[StepRecords]:
    """The training steps of one trace file or trace directory (its step files in step
    order, `data.traces.trace_files`), in order, each complete before it is yielded.

    ``prompts`` > 0 keeps only the first that many distinct prompts of the file (in order of
    first appearance). Raises TraceFormatError (file and line) for a malformed line, a step
    smaller than an earlier one, or a duplicate (step, prompt, sample); ValueError when the
    file has no records (or none of the kept prompts).

    Run-ahead outputs a training run recorded (tag "runahead") are skipped, here and in
    steps_from_records: they were never samples of their step, and replaying them as
    sequences would count tokens no training step waited for. (The replay's own run-ahead
    model, simulator.RunAhead, stands in for the cache entries they made.)"""
    path = Path(path)
    kept: set[int] = set()
    current: _StepBuilder | None = None
    for where, lineno, r in _numbered_records(path):
        if r.tag == "runahead":  # never a training sample (see the docstring)
            continue
        if prompts and r.prompt_key not in kept:
            if len(kept) >= prompts:
                continue
            kept.add(r.prompt_key)
        if current is None or r.step != current.step:
            if current is not None:
                if r.step < current.step:
                    raise TraceFormatError(
                        f"{where}:{lineno}: step {r.step} after step {current.step}: the "
                        "records of a trace file must come in step order")
                yield current.build()
            current = _StepBuilder(r.step)
        current.add(r.prompt_key, r.sample_index, r.prompt_token_ids, r.response_token_ids,
                    f"{where}:{lineno}")
    if current is None:
        raise ValueError(f"{path}: the trace has no records")
    yield current.build()


def _numbered_records(path: Path) -> Iterator[tuple[Path, int, TraceRecord]]:
    """(file, line, record) of a trace file or of a directory's step files, in step order."""
    for f in trace_files(path):
        for lineno, r in iter_numbered_traces(f):
            yield f, lineno, r


def with_next(steps: Iterable[StepRecords]) -> Iterator[tuple[StepRecords, StepRecords | None]]:
    """(step, the step after it or None): what run-ahead needs, two steps in memory."""
    it = iter(steps)
    cur = next(it, None)
    while cur is not None:
        nxt = next(it, None)
        yield cur, nxt
        cur = nxt


def steps_from_records(records: Iterable[TraceRecord]) -> list[StepRecords]:
    """In-memory records (any order) as steps in step order; ValueError when there are none
    or when a (step, prompt, sample) repeats."""
    builders: dict[int, _StepBuilder] = {}
    for n, r in enumerate(records):
        if r.tag == "runahead":
            continue
        b = builders.setdefault(r.step, _StepBuilder(r.step))
        b.add(r.prompt_key, r.sample_index, r.prompt_token_ids, r.response_token_ids,
              f"record {n}")
    if not builders:
        raise ValueError("the trace has no records")
    return [builders[s].build() for s in sorted(builders)]


def count_response_tokens(path: str | os.PathLike) -> int:
    """A quick scan of a trace file (or a trace directory's step files) for its number of
    response tokens (commas inside each line's response_token_ids list; no JSON parsing, no
    validation): the progress bar's total. A malformed file is reported by the real read,
    not here."""
    key = b'"response_token_ids"'
    total = 0
    for f in trace_files(path):
        total += _count_file(f, key)
    return total


def _count_file(path: Path, key: bytes) -> int:
    import gzip

    total = 0
    with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")) as f:
        try:
            for line in f:
                k = line.find(key)
                if k < 0:
                    continue
                a = line.find(b"[", k)
                b = line.find(b"]", a)
                if a < 0 or b < 0:
                    continue
                commas = line.count(b",", a, b)
                total += commas + 1 if commas or line[a + 1:b].strip() else 0
        except (OSError, EOFError, ValueError):
            pass  # the reader reports it with file and line
    return total
