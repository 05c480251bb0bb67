import gzip
import json
from pathlib import Path

import pytest

from openrlhf_srt.cache.keys import prompt_key
from openrlhf_srt.data.traces import (
    TraceFormatError,
    TraceRecord,
    TraceWriter,
    parse_record,
    read_traces,
)

REFERENCE_TRACES = Path(__file__).resolve().parents[1] / "reference_traces"  # its README.md


def _record(step=0, sample=0, prompt=(1, 2, 3), response=(4, 5)) -> TraceRecord:
    return TraceRecord(
        step=step, prompt_key=prompt_key(list(prompt)), prompt_token_ids=list(prompt),
        sample_index=sample, response_token_ids=list(response), finish_reason="stop",
        policy_version=step, label="7", reward=1.0,
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_round_trip(tmp_path, suffix):
    records = [_record(step=s, sample=i, response=(s, i, 9)) for s in range(2) for i in range(3)]
    records.append(TraceRecord(**{**_record().__dict__, "tag": "runahead", "reward": None}))
    records.append(TraceRecord(**{**_record(sample=9).__dict__,
                                  "extra": {"action_ranges": [[0, 1], [2, 3]]}}))
    path = tmp_path / f"t{suffix}"
    with TraceWriter(path) as w:
        for r in records:
            w.write(r)
    assert read_traces(path) == records


def test_prompt_key_is_stable_and_content_based():
    assert prompt_key([1, 2, 3]) == prompt_key((1, 2, 3))
    assert prompt_key([1, 2, 3]) != prompt_key([1, 2, 4])
    # A fixed value: the key must not depend on the process (no Python hash seed).
    assert prompt_key([1, 520, 9531, 198]) == prompt_key([1, 520, 9531, 198])
    assert 0 <= prompt_key([5]) < 2**63


@pytest.mark.parametrize("ids, message", [
    ([1, 2**32 + 1], "token id 4294967297 is outside int32 [0, 2147483647]"),
    ([2**31], "token id 2147483648 is outside int32"),
    ([2**64 + 5], "outside int32"),
    ([-1, 5], "token id -1 is outside int32"),
    ([1.0, 2.0], "token ids must be integers"),
    ([[1, 2], [3]], "token ids must be a flat sequence of integers"),
])
def test_prompt_key_refuses_ids_outside_int32(ids, message):
    """Cast to int32 such ids wrapped: [1, 2**32 + 1] and [1, 1] had one key."""
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        prompt_key(ids)


def test_check_token_ids_knows_the_vocabulary():
    from openrlhf_srt.cache.keys import check_token_ids

    assert check_token_ids([0, 49151], vocab_size=49152).tolist() == [0, 49151]
    with pytest.raises(ValueError, match=r"token id 49152 is outside the vocabulary of "
                                         r"49152 tokens \[0, 49151\]"):
        check_token_ids([3, 49152], vocab_size=49152)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


GOOD = _record().to_json()


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({k: v for k, v in json.loads(GOOD).items() if k != "step"}), "missing field 'step'"),
        (GOOD.replace('"finish_reason":"stop"', '"finish_reason":"done"'), "finish_reason"),
        (GOOD.replace('"response_token_ids":[4,5]', '"response_token_ids":[4,-5]'), "response_token_ids"),
        (GOOD.replace('"prompt_token_ids":[1,2,3]', '"prompt_token_ids":[]'), "is empty"),
        (GOOD.replace('"step":0', '"step":"0"'), "'step' must be an integer"),
        (GOOD.replace(str(prompt_key([1, 2, 3])), "12345"), "not the hash"),
        (GOOD.replace('"tag":"rollout"', '"tag":"other"'), "'tag'"),
        (GOOD.replace('"response_token_ids":[4,5]', '"response_token_ids":[4,true]'),
         "'response_token_ids' must be a list of integer token ids"),
        # ids that wrap in int32 to the prompt [1, 2, 3]: same key, so the key check passed
        (GOOD.replace('"prompt_token_ids":[1,2,3]', f'"prompt_token_ids":[1,2,{3 + 2**32}]'),
         "'prompt_token_ids': token id 4294967299 is outside int32"),
    ],
)
def test_reader_rejects_bad_lines_with_file_and_line(tmp_path, bad, message):
    path = tmp_path / "bad.jsonl"
    _write_lines(path, [GOOD, "", bad, GOOD])
    with pytest.raises(TraceFormatError) as e:
        read_traces(path)
    assert f"{path}:3:" in str(e.value)
    assert message in str(e.value)


def test_reader_rejects_truncated_gzip(tmp_path):
    path = tmp_path / "t.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for _ in range(200):
            f.write(GOOD + "\n")
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match=rf"{path}:\d+: the gzip stream ends early"):
        read_traces(path)


def test_reads_reference_traces_without_prompt_key():
    records = read_traces(REFERENCE_TRACES / "smollm2_math_t0.6.jsonl.gz")
    assert len(records) == 288
    assert len({r.prompt_key for r in records}) == 12
    assert all(r.prompt_key == prompt_key(r.prompt_token_ids) for r in records)
    assert records[0].extra["prompt_id"] == "q0"
    assert all(r.policy_version == r.step for r in records)


def test_parse_record_defaults_policy_version_to_step():
    obj = json.loads(GOOD)
    obj.pop("policy_version")
    obj["step"] = 4
    assert parse_record(obj).policy_version == 4


def test_extra_fields_round_trip_unchanged(tmp_path):
    from openrlhf_srt.data.traces import TraceRecord, TraceWriter, read_traces

    rec = TraceRecord(step=0, prompt_key=0, prompt_token_ids=[1, 2], sample_index=0,
                      response_token_ids=[3], finish_reason="stop", policy_version=0,
                      extra={"method": "srt", "temperature": 0.6})
    from openrlhf_srt.cache.keys import prompt_key

    rec = TraceRecord(**{**rec.__dict__, "prompt_key": prompt_key([1, 2])})
    with TraceWriter(tmp_path / "t.jsonl") as w:
        w.write(rec)
    assert read_traces(tmp_path / "t.jsonl")[0].extra == {"method": "srt", "temperature": 0.6}


def test_step_writer_rotates_per_step_and_trace_files_reads_them_in_step_order(tmp_path):
    from openrlhf_srt.data.traces import StepTraceWriter, trace_files

    for engine in (1, 0):  # an OpenRLHF run: one folder per engine actor
        w = StepTraceWriter(tmp_path / f"engine{engine}")
        for step in (2, 10, 1):
            w.begin_step(step)
            w.write(_record(step=step, sample=engine))
            w.end_step()
        w.close()
        assert w.take_counts()["records"] == 3
    files = trace_files(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        f"engine{e}/step_{s:06d}.jsonl.gz" for s in (1, 2, 10) for e in (0, 1)]
    for f in files:  # gzip streams
        with gzip.open(f) as g:
            assert g.read()
    assert [(r.step, r.sample_index) for r in read_traces(tmp_path)] == [
        (s, e) for s in (1, 2, 10) for e in (0, 1)]
    assert trace_files(files[0]) == [files[0]]


def test_a_step_cut_short_leaves_the_earlier_steps_readable(tmp_path):
    """A run that dies mid-step leaves that step's .tmp (not read) and every earlier step's
    file whole; the step redone after a resume replaces it."""
    from openrlhf_srt.data.traces import StepTraceWriter

    w = StepTraceWriter(tmp_path)
    w.begin_step(0)
    w.write(_record(step=0))
    assert w.end_step() == tmp_path / "step_000000.jsonl.gz"
    w.begin_step(1)
    for i in range(50):
        w.write(_record(step=1, sample=i))
    w._writer._f.flush()  # what the crash left on disk
    assert [r.step for r in read_traces(tmp_path)] == [0]
    assert (tmp_path / "step_000001.jsonl.gz.tmp").is_file()
    redone = StepTraceWriter(tmp_path)  # the resumed run
    redone.begin_step(1)
    redone.write(_record(step=1, sample=7))
    redone.end_step()
    redone.begin_step(2)  # no record: no file
    assert redone.end_step() is None
    redone.begin_step(3)  # cut short by an error: dropped at close
    redone.write(_record(step=3))
    redone.close()
    assert [(r.step, r.sample_index) for r in read_traces(tmp_path)] == [(0, 0), (1, 7)]
    assert sorted(f.name for f in tmp_path.iterdir()) == [
        "step_000000.jsonl.gz", "step_000001.jsonl.gz"]  # steps 2 and 3: no .tmp left


def test_trace_files_errors_name_the_path(tmp_path):
    from openrlhf_srt.data.traces import trace_files

    with pytest.raises(FileNotFoundError, match="trace file not found: .*missing"):
        trace_files(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no trace step files"):
        trace_files(tmp_path)


def test_check_trace_dir_names_the_flag(tmp_path):
    from openrlhf_srt.data.traces import check_trace_dir

    assert check_trace_dir(tmp_path / "a" / "b", "--trace_dir") == (tmp_path / "a" / "b")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"^--trace_dir .*file/sub: trace files cannot be "
                                         r"written there \(Not a directory\)"):
        check_trace_dir(tmp_path / "file" / "sub", "--trace_dir")


def test_atomic_writer_publishes_on_close_only(tmp_path):
    path = tmp_path / "t.jsonl.gz"
    w = TraceWriter(path, atomic=True)
    w.write(_record())
    assert not path.exists()
    w.close()
    assert read_traces(path) == [_record()]
    with pytest.raises(RuntimeError), TraceWriter(tmp_path / "u.jsonl.gz", atomic=True) as w:
        w.write(_record())
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == [path]
