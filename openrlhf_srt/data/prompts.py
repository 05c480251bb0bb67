"""Prompt sets: the built-in math problems, user prompt files, and chat-template rendering.

Prompt files follow OpenRLHF's conventions (``--input_key``, ``--label_key``,
``--apply_chat_template``, ``--input_template``): each record's ``input_key`` field is either a
plain string or a chat-style list of ``{"role", "content"}`` messages; ``label_key`` holds the
reference answer the reward checks. Conventions and error messages: docs/prompts.md.

Every loader returns the same record shape as :func:`builtin_math_prompts`: dicts with
``prompt`` (str or list of messages), ``label`` (str or None), ``id`` (str) and
``datasource`` (str). No torch, vLLM or transformers import happens here; the tokenizer is
passed in.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from openrlhf_srt.data.math_prompts import DEFAULT_N, DEFAULT_SEED, builtin_math_prompts
from openrlhf_srt.data.textio import parse_json, read_text, text_lines

__all__ = [
    "ChatTokenizer",
    "builtin_math_prompts",
    "check_prompt_ids",
    "load_prompt_file",
    "load_prompts",
    "render_prompt",
]

SUPPORTED_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz", ".parquet")
_BUILTIN_RE = re.compile(r"^builtin(?::(\d+))?$")


class ChatTokenizer(Protocol):
    """What :func:`render_prompt` needs of a (Hugging Face) tokenizer."""

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> Any: ...

    def encode(self, text: str, **kwargs: Any) -> Any: ...


# ---- loading ------------------------------------------------------------------------------

def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _read_records(path: Path) -> list[tuple[Any, str]]:
    """(record, where) pairs; ``where`` is 'record 3' or 'record 3 (line 5)'."""
    suffix = _suffix(path)
    if suffix in (".json", ".json.gz"):
        text = read_text(path)
        try:
            data = parse_json(text)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        if not isinstance(data, list):
            raise ValueError(
                f"{path}: a .json prompt file must hold a list of objects, "
                f"found {type(data).__name__}"
            )
        return [(rec, f"record {i}") for i, rec in enumerate(data)]
    if suffix in (".jsonl", ".jsonl.gz"):
        out = []
        for lineno, line in text_lines(path):
            if not line.strip():
                continue
            try:
                rec = parse_json(line)
            except ValueError as e:
                raise ValueError(f"{path}: record {len(out)} (line {lineno}): {e}") from None
            out.append((rec, f"record {len(out)} (line {lineno})"))
        return out
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(
                f"{path}: reading Parquet needs pyarrow, which is not installed "
                f"(pip install pyarrow, or install openrlhf-srt with the cpu or gpu extra)"
            ) from None
        try:
            rows = pq.read_table(path).to_pylist()
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise ValueError(f"{path}: not a readable Parquet file ({e})") from None
        return [(rec, f"record {i}") for i, rec in enumerate(rows)]
    raise ValueError(
        f"{path}: unknown prompt file type {suffix or '(no extension)'!r}; "
        f"expected one of {', '.join(SUPPORTED_SUFFIXES)}"
    )


def _check_messages(value: Any, where: str) -> list[dict[str, str]]:
    if not value:
        raise ValueError(f"{where}: the chat message list is empty")
    messages = []
    for j, msg in enumerate(value):
        if not isinstance(msg, Mapping) or not isinstance(msg.get("role"), str) \
                or not isinstance(msg.get("content"), str):
            raise ValueError(  # noqa: TRY004 - ValueError is the documented contract
                f"{where}: message {j} must be an object with string 'role' and 'content', "
                f"got {msg!r:.80}"
            )
        messages.append({"role": msg["role"], "content": msg["content"]})
    return messages


def _label_text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{where}: the label must be a string or a number, got {value!r:.80}")


def load_prompt_file(
    path: str | os.PathLike,
    input_key: str = "input",
    label_key: str | None = "label",
    *,
    id_key: str | None = "id",
    datasource_key: str = "datasource",
    limit: int | None = None,
) -> list[dict]:
    """Read prompts from a JSON (list of objects), JSONL or Parquet file.

    ``label_key=None`` reads prompts without labels (``label`` is None). ``id_key`` names an
    optional per-record id; records without one get ``"<file name>:<index>"``. Raises
    ValueError naming the file (and for a bad record its index and the key) on: a missing
    file, an unknown extension, malformed JSON, a record that is not an object, a record
    without ``input_key`` or ``label_key``, or an input that is neither a string nor a list
    of {role, content} messages.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt file not found: {path}")
    out = []
    for index, (rec, where) in enumerate(_read_records(path)):
        if limit is not None and index >= limit:
            break
        where = f"{path}: {where}"
        if not isinstance(rec, Mapping):
            raise ValueError(  # noqa: TRY004
                f"{where}: expected an object, got {type(rec).__name__}")
        for key, what in ((input_key, "input_key"), (label_key, "label_key")):
            if key is not None and key not in rec:
                raise ValueError(
                    f"{where}: no {what} {key!r}; the record has keys {sorted(rec)}"
                )
        value = rec[input_key]
        if isinstance(value, str):
            prompt: str | list[dict[str, str]] = value
        elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
            prompt = _check_messages(value, f"{where}, key {input_key!r}")
        else:
            raise ValueError(  # noqa: TRY004
                f"{where}: key {input_key!r} must be a string or a list of chat messages, "
                f"got {type(value).__name__}"
            )
        label = None if label_key is None else _label_text(rec[label_key],
                                                           f"{where}, key {label_key!r}")
        rid = rec.get(id_key) if id_key is not None else None
        out.append({
            "prompt": prompt,
            "label": label,
            "id": str(rid) if rid is not None else f"{path.name}:{index}",
            "datasource": str(rec.get(datasource_key) or "default"),
        })
    return out


def load_prompts(
    source: str | os.PathLike,
    input_key: str = "input",
    label_key: str | None = "label",
    *,
    seed: int = DEFAULT_SEED,
    limit: int | None = None,
    **kwargs: Any,
) -> list[dict]:
    """``"builtin"`` (1,024 problems), ``"builtin:N"`` (N problems) or a prompt file path.

    Built-in records carry ``difficulty`` and ``template`` besides the common fields and
    ``datasource == "builtin"``; ``seed`` applies to them only.
    """
    m = _BUILTIN_RE.match(str(source)) if isinstance(source, str) else None
    if m:
        n = int(m.group(1)) if m.group(1) else DEFAULT_N
        if limit is not None:
            n = min(n, limit)
        return [dict(rec, datasource="builtin") for rec in builtin_math_prompts(n, seed)]
    if isinstance(source, str) and source.startswith("builtin"):
        raise ValueError(f"bad built-in prompt source {source!r}: use 'builtin' or 'builtin:N'")
    return load_prompt_file(source, input_key, label_key, limit=limit, **kwargs)


# ---- rendering ----------------------------------------------------------------------------

def _as_token_ids(result: Any, what: str) -> list[int]:
    """A flat list of ints from a list, tensor/array, dict/BatchEncoding or batch of one."""
    if isinstance(result, Mapping) or (hasattr(result, "keys") and hasattr(result, "__getitem__")
                                       and not isinstance(result, (str, list, tuple))):
        if "input_ids" not in result:
            raise TypeError(f"{what} returned a mapping without 'input_ids': {list(result.keys())}")
        result = result["input_ids"]
    if hasattr(result, "tolist"):
        result = result.tolist()
    if isinstance(result, tuple):
        result = list(result)
    if isinstance(result, list) and len(result) == 1 and isinstance(result[0], (list, tuple)):
        result = list(result[0])  # a batch of one
    if not isinstance(result, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in result):
        raise TypeError(f"{what} did not return token ids: {type(result).__name__} {result!r:.80}")
    return result


def to_messages(prompt: str | Sequence[Mapping[str, str]],
                system: str | None = None) -> list[dict[str, str]]:
    """Chat messages for a prompt; ``system`` is prepended unless one is already there."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = _check_messages(prompt, "prompt")
    if system is not None and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return messages


def render_prompt(
    tokenizer: ChatTokenizer,
    prompt: str | Sequence[Mapping[str, str]] | Mapping[str, Any],
    apply_chat_template: bool = True,
    system: str | None = None,
    *,
    input_template: str | None = None,
    add_special_tokens: bool = True,
) -> list[int]:
    """Token ids of a prompt, ready to generate from.

    With ``apply_chat_template`` the prompt becomes messages and goes through
    ``tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)``;
    whatever that returns (a list, a nested batch of one, an array, a dict/BatchEncoding with
    ``input_ids``, or a string, which is then encoded without special tokens) becomes a flat
    list of ints. Without it, a string prompt (formatted with ``input_template``'s ``{}`` if
    given, as in OpenRLHF) is encoded with ``tokenizer.encode``; chat-style prompts need the
    template. A record dict from a loader may be passed whole.
    """
    if isinstance(prompt, Mapping):
        if "prompt" not in prompt:
            raise ValueError(f"a prompt record needs a 'prompt' key; it has {sorted(prompt)}")
        prompt = prompt["prompt"]
    if apply_chat_template:
        messages = to_messages(prompt, system)
        result = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(result, str):
            result = tokenizer.encode(result, add_special_tokens=False)
        return _as_token_ids(result, "apply_chat_template")
    if not isinstance(prompt, str):
        raise ValueError(  # noqa: TRY004
            "a chat-style prompt (list of messages) needs apply_chat_template=True")
    text = prompt if input_template is None else input_template.format(prompt)
    if system is not None:
        text = f"{system}\n\n{text}"
    return _as_token_ids(tokenizer.encode(text, add_special_tokens=add_special_tokens), "encode")


def check_prompt_ids(ids: Sequence[int], where: str, *, max_model_len: int,
                     max_new_tokens: int, vocab_size: int | None = None) -> None:
    """Refuse a rendered prompt the engine cannot answer in full: a token id outside int32 or
    the vocabulary, no tokens, or prompt + ``max_new_tokens`` longer than ``max_model_len``
    (vLLM would refuse the prompt mid-run, or cut the response short). ValueError naming
    ``where`` and the lengths."""
    from openrlhf_srt.cache.keys import check_token_ids  # loads the native cache: only here

    try:
        check_token_ids(ids, vocab_size)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if not len(ids):
        raise ValueError(f"{where}: the prompt renders to no tokens")
    if len(ids) + max_new_tokens > max_model_len:
        raise ValueError(
            f"{where}: the prompt is {len(ids)} tokens; with {max_new_tokens} new tokens that "
            f"is {len(ids) + max_new_tokens}, over the engine's max_model_len {max_model_len}")
