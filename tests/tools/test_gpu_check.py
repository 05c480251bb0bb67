"""tools/gpu_check.py, the check users run on their GPU, run here as it runs on CPU
(--tiny: the embedded model in float32), so it cannot rot: both engines start as OpenRLHF
configures them, greedy outputs are identical, the two-sample test accepts, the long-tail
table is printed and written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "gpu_check.py"

pytestmark = [pytest.mark.engine, pytest.mark.verifies]


def test_gpu_check_runs_tiny_on_cpu(tmp_path, embedded_model_path):
    proc = subprocess.run([sys.executable, str(TOOL), "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=1200, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "greedy: 2/2 prompts identical over 24 tokens" in out
    assert "| step | baseline s | SRT s |" in out and "generation speedup" in out
    result = json.loads((tmp_path / "gpu_check.json").read_text())["result"]
    assert result["greedy_ok"] and result["two_sample_ok"]
    assert len(result["steps"]) == 2 and all(s["srt_tokens"] > 0 for s in result["steps"])
    assert 0.0 < result["speedup"] < 10.0


def test_gpu_check_needs_a_model_or_tiny(capsys):
    proc = subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2 and "give --model" in proc.stderr
