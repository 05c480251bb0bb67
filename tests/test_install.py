"""The `gpu` extra resolves with pip's resolver to what OpenRLHF 0.11.2 with its `vllm` extra
installs (needs the package registry, as CI has it; ~30 s, metadata only, nothing installed).

flash-attn 2.8.3, which OpenRLHF pins, exists only as a source package that needs torch and
nvcc to build: the docs tell GPU users to take it from their CUDA container or a prebuilt
wheel first. Here it is provided the same way, as an installed distribution in the target
environment, so the resolver takes it as satisfied."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What `pip install 'openrlhf[vllm]==0.11.2'` resolves to (docs/setup.md)
EXPECTED = {"openrlhf": "0.11.2", "vllm": "0.29.0", "torch": "2.13.0",
            "transformers": "5.15.0", "deepspeed": "0.19.6", "ray": "2.55.0"}


def _gpu_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["gpu"]]


def _environment_with_flash_attn(root: Path) -> Path:
    """An empty virtual environment where flash-attn 2.8.3 is installed (as a prebuilt wheel
    or a CUDA container would have it): its metadata is all the resolver reads."""
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    purelib = Path(subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    info = purelib / "flash_attn-2.8.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flash-attn\nVersion: 2.8.3\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")
    return python


@pytest.mark.registry
def test_gpu_extra_resolves_to_openrlhfs_own_versions(tmp_path):
    python = _environment_with_flash_attn(tmp_path / "env")
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "--python", str(python), "install", "--dry-run",
           "--quiet", "--report", str(report), *_gpu_requirements()]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    errors = "\n".join(line for line in run.stderr.splitlines()
                       if not line.startswith("WARNING: Location"))
    assert run.returncode == 0, f"pip could not resolve the gpu extra:\n{errors[-4000:]}"
    resolved = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
                for i in json.loads(report.read_text())["install"]}
    got = {name: resolved.get(name, "").split("+")[0] for name in EXPECTED}
    assert got == EXPECTED
    assert "flash-attn" not in resolved  # the prerequisite is used as installed


def test_packaged_step_curves_are_in_the_wheel():
    """scikit-build-core puts every file under `wheel.packages` into the wheel that git does
    not ignore and `wheel.exclude` does not drop: the step-cost curves (JSON beside
    drafting/step_curve.py, which the budget prior reads) must be such files."""
    from openrlhf_srt.drafting.step_curve import CURVES_DIR

    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["scikit-build"]
    assert "openrlhf_srt" in build["wheel"]["packages"]
    assert not build["wheel"].get("exclude"), "wheel.exclude: check it keeps the curves"
    curves = sorted(CURVES_DIR.glob("*.json"))
    assert curves, f"no step-cost curve packaged in {CURVES_DIR}"
    assert CURVES_DIR.resolve().is_relative_to(ROOT / "openrlhf_srt")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot ask git which files it ignores")
    ignored = subprocess.run(["git", "check-ignore", *map(str, curves)], cwd=ROOT,
                             capture_output=True, text=True, check=False)
    assert ignored.returncode == 1, f"git ignores packaged curves: {ignored.stdout}"
