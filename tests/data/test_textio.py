"""Damaged trace and prompt files: every read error names the file (and the line where there
is one), as a ValueError; none surfaces as a bare EOFError, zlib.error, BadGzipFile,
UnicodeDecodeError or RecursionError."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from openrlhf_srt.data.prompts import load_prompt_file
from openrlhf_srt.data.traces import TraceRecord, read_traces

GOOD_TRACE = TraceRecord(step=0, prompt_key=0, prompt_token_ids=[1, 2, 3], sample_index=0,
                         response_token_ids=[4, 5], finish_reason="stop",
                         policy_version=0).to_json()
GOOD_TRACE = GOOD_TRACE.replace('"prompt_key":0,', "")  # the reader derives it
GOOD_PROMPT = json.dumps({"input": "1+1?", "label": "2"})
DEEP = "[" * 100_000 + "]" * 100_000  # json's recursion limit, not a syntax error


def gz_bytes(text: str) -> bytes:
    return gzip.compress(text.encode())


def damaged(kind: str, good: str) -> tuple[str, bytes, str]:
    """(file suffix, contents, expected message) of a file whose line 3 (or stream) is bad."""
    lines = [good, good]
    if kind == "truncated_gzip":
        data = gz_bytes("\n".join([good] * 400) + "\n")
        return ".gz", data[:len(data) // 2], r":\d+: the gzip stream ends early"
    if kind == "not_gzip":
        return ".gz", b"plain text, not gzip\n", r":1: not a valid gzip file"
    if kind == "corrupt_gzip":
        data = bytearray(gz_bytes("\n".join([good] * 400) + "\n"))
        data[10] = 0xFF  # the first deflate block's header: reserved block type 3
        return ".gz", bytes(data), r":1: not a valid gzip file"
    if kind == "bad_utf8":
        return "", ("\n".join(lines) + "\n").encode() + b'{"input": "\xff\xfe"}\n', \
            r":3: not UTF-8 text"
    if kind == "deep_json":
        return "", ("\n".join(lines + [DEEP]) + "\n").encode(), r":3: not valid JSON \(nested"
    raise AssertionError(kind)


KINDS = ["truncated_gzip", "not_gzip", "corrupt_gzip", "bad_utf8", "deep_json"]


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_trace_file_names_file_and_line(tmp_path, kind):
    suffix, data, message = damaged(kind, GOOD_TRACE)
    path = tmp_path / f"t.jsonl{suffix}"
    path.write_bytes(data)
    with pytest.raises(ValueError) as e:
        read_traces(path)
    assert re.search(re.escape(str(path)) + message, str(e.value)), str(e.value)


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_jsonl_prompt_file_names_file_and_line(tmp_path, kind):
    suffix, data, message = damaged(kind, GOOD_PROMPT)
    if kind == "deep_json":  # a bad record: its index and line
        message = r": record 2 \(line 3\): not valid JSON \(nested"
    path = tmp_path / f"p.jsonl{suffix}"
    path.write_bytes(data)
    with pytest.raises(ValueError) as e:
        load_prompt_file(path)
    assert re.search(re.escape(str(path)) + message, str(e.value)), str(e.value)


@pytest.mark.parametrize("name, data, message", [
    ("p.json.gz", gz_bytes(json.dumps([{"input": "a", "label": "1"}] * 500))[:-12],
     ": the gzip stream ends early"),
    ("p.json", b'[{"input": "ok", "label": "1"},\n{"input": "\xc3\x28", "label": "2"}]',
     ":2: not UTF-8 text"),
    ("p.json", DEEP.encode(), ": not valid JSON (nested too deeply"),
    ("p.parquet", b"PAR1 this is not parquet", ": not a readable Parquet file"),
])
def test_damaged_whole_file_prompts_name_the_file(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ValueError) as e:
        load_prompt_file(path)
    assert str(e.value).startswith(f"{path}{message}"), str(e.value)


def test_intact_files_still_read(tmp_path):
    for suffix in ("", ".gz"):
        text = "\r\n".join([GOOD_TRACE] * 3) + "\r\n"  # CRLF line ends too
        path = tmp_path / f"t.jsonl{suffix}"
        path.write_bytes(gz_bytes(text) if suffix else text.encode())
        assert len(read_traces(path)) == 3
