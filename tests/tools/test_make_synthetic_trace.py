"""tools/make_synthetic_trace.py: a valid, seeded trace of the requested shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from openrlhf_srt.replay.stream import iter_steps


def test_shape_lengths_seed_and_repetition(load_tool, tmp_path):
    make = load_tool("make_synthetic_trace")
    args = ["--steps", "3", "--prompts", "4", "--samples", "5", "--max-tokens", "300",
            "--median", "60"]
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    assert make.main(["--out", str(a), *args]) == 0
    assert make.main(["--out", str(b), *args]) == 0
    steps = list(iter_steps(a))  # the reader validates every line, keys included
    assert [s.step for s in steps] == [0, 1, 2]
    assert all(len(s) == 20 and len(set(s.prompt_keys.tolist())) == 4 for s in steps)
    lengths = np.concatenate([s.lengths for s in steps])
    assert lengths.min() >= 1 and lengths.max() <= 300
    meta = json.loads(Path(str(a) + ".meta.json").read_text())
    assert meta["tokens"] == int(lengths.sum())
    # seeded: the same arguments write the same records
    assert [s.responses.tolist() for s in steps] == [s.responses.tolist() for s in iter_steps(b)]
    # samples of a prompt copy its latent: two samples share far more 4-grams than chance
    first = steps[0]
    grams = [{tuple(first.response(i)[j:j + 4]) for j in range(len(first.response(i)) - 3)}
             for i in range(2)]
    assert min(map(len, grams)) >= 20, "the seed must give two long enough samples"
    assert len(grams[0] & grams[1]) >= 5


def test_bad_flags_name_the_flag(load_tool, tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_tool("make_synthetic_trace").main(["--out", str(tmp_path / "x.jsonl"), "--steps", "0"])
    assert "--steps" in capsys.readouterr().err
