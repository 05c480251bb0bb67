"""tools/bench_step_cost.py on made-up engine samples (no engine: the curve it builds, the
cells it extrapolates, its flags and plot) and tools/roofline_curve.py's arithmetic on a
hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest

from openrlhf_srt.drafting.step_curve import MachineKind, StepCurve


@pytest.fixture(scope="module")
def bench(load_tool):
    return load_tool("bench_step_cost")


@pytest.fixture(scope="module")
def roofline(load_tool):
    return load_tool("roofline_curve")


def _cell(s, k, ms):
    return {"seqs": s, "draft_tokens": k, "seconds": [ms / 1000 * f for f in (0.9, 1.0, 1.5)]}


def test_curve_takes_medians_and_extends_cells_over_the_token_cap(bench, tmp_path):
    a = bench.parse_args(["--seqs", "1", "4", "--draft-tokens", "0", "1", "2",
                          "--max-batch-tokens", "8", "--context", "64"])
    # step = 10 ms + 1 ms per token: s * (1 + k) tokens; (4, 2) = 12 tokens is over the cap
    spec_cells = [_cell(s, k, 10 + s * (1 + k)) for s in (1, 4) for k in (0, 1, 2)
                  if s * (1 + k) <= 8]
    base = {"engine_start_seconds": 1.0, "cells": [_cell(1, None, 9), _cell(4, None, 12)]}
    spec = {"engine_start_seconds": 2.0, "cells": spec_cells,
            "model_config": {"model": "/m/SmolLM2-135M", "dtype": "torch.bfloat16"}}
    curve, name = bench.build_curve(base, spec, a, "cmd")
    np.testing.assert_allclose(curve.baseline, [0.009, 0.012])
    np.testing.assert_allclose(curve.speculative, [[0.011, 0.012, 0.013],
                                                   [0.014, 0.018, 0.022]])  # last: extended
    assert curve.extra["extrapolated"] == [[4, 2]]
    assert curve.extra["extrapolation_seconds_per_token"] == pytest.approx(0.001)
    h = curve.header
    assert (h["source"], h["dtype"], h["context_tokens"], h["command"]) == \
        ("vllm", "bfloat16", 64, "cmd")
    assert {"vllm", "torch"} <= set(h["versions"])
    assert name == f"{MachineKind.from_dict(h['machine']).slug()}-smollm2-135m"
    curve.save(tmp_path / "c.json")
    assert StepCurve.load(tmp_path / "c.json").header == h
    bench.plot(curve, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0


@pytest.mark.parametrize("argv", [["--draft-tokens", "1", "2"], ["--seqs", "4", "2"],
                                  ["--seqs", "1", "300", "--max-batch-tokens", "256"],
                                  ["--reps", "0"], ["--warmup", "0"], ["--max-batch", "64"]])
def test_bad_flags_are_refused(bench, argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_roofline_step_on_a_hand_computed_case(roofline):
    gpu = roofline.GPU("NVIDIA H200", hbm_bytes_per_s=1e12, bf16_dense_flops=1e14, source="")
    m = roofline.ModelShape("toy", hidden=8, layers=1, heads=2, kv_heads=1, intermediate=16,
                            vocab=10)
    a = roofline.Assumptions(bandwidth_efficiency=0.5, matmul_efficiency=0.5,
                             step_overhead_s=0.001, spec_overhead_s=0.002, logit_passes=1)
    # head_dim 4, kv width 4; weights 2*64 + 2*32 + 3*128 = 576, + LM head 80 = 656 params
    assert (m.matmul_params, m.kv_bytes_per_token) == (656, 16)
    assert m.activation_bytes_per_token == 2 * (8 + 16 + 16 + 8 + 32 + 16 + 8)
    # 2 sequences, k = 1, context 100: 4 tokens, 4 sampled positions
    nbytes = 656 * 2 + 2 * 100 * 16 + 4 * (16 + 208) + 4 * 10 * 4
    flops = 4 * (2 * 656 + 4 * 100 * 8)
    want = max(nbytes / 0.5e12, flops / 0.5e14) + 0.003
    assert roofline.step_seconds(gpu, m, a, [2], 1, 100, True)[0] == pytest.approx(want)
    base = 656 * 2 + 2 * 100 * 16 + 2 * (16 + 208) + 2 * 10 * 4
    assert roofline.step_seconds(gpu, m, a, [2], 0, 100, False)[0] == \
        pytest.approx(max(base / 0.5e12, 2 * (2 * 656 + 3200) / 0.5e14) + 0.001)


def test_roofline_curve_is_a_labelled_cuda_curve(roofline, tmp_path):
    assert roofline.main(["--gpu", "h100", "--context", "4096", "--out", str(tmp_path)]) == 0
    c = StepCurve.load(tmp_path / "h100-qwen25-15b-ctx4k-roofline.json")
    assert c.header["source"] == "roofline"
    assert MachineKind.from_dict(c.header["machine"]).slug() == "h100"
    assert c.header["assumptions"]["bandwidth_efficiency"] == 0.7
    assert np.all(np.diff(c.speculative, axis=1) >= 0) and np.all(np.diff(c.baseline) > 0)
    assert np.all(c.speculative[:, 0] > c.baseline)  # the speculative path's own overhead
