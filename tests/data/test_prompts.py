"""Built-in math prompts, the prompt file loader and chat-template rendering."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter
from fractions import Fraction

import pytest

from openrlhf_srt.data.math_prompts import INSTRUCTION, builtin_math_prompts, make_problem
from openrlhf_srt.data.prompts import load_prompt_file, load_prompts, render_prompt

# ---- built-in set -------------------------------------------------------------------------

# Each template's answer recomputed from the numbers in the problem text, in textual order.
SOLVERS = {
    "add_more": lambda a, b: a + b,
    "give_away": lambda a, b: a - b,
    "pages": lambda a, b: a + b,
    "taller": lambda a, b: a - b,
    "bus": lambda a, b: a - b,
    "boxes": lambda a, b: a * b,
    "share": lambda total, k: total / k,
    "cost_many": lambda p, k: p * k,
    "buy_give": lambda a, b, c: a + b - c,
    "garden": lambda rows, per, d: rows * per - d,
    "unit_price": lambda k, total, m: total / k * m,
    "discount": lambda p, pct: p * (100 - pct) / 100,
    "percent_of": lambda n, pct: n * pct / 100,
    "ages_future": lambda a, k, y: a * k + y,
    "change": lambda k, p, bill: bill - k * p,
    "fraction_left": lambda n, num, den, c: n - n * num / den - c,
    "think_number": lambda a, b, c: (c - b) / a,
    "ages_sum": lambda s, d: (s - d) / 2,
    "shopping": lambda a, p, b, q, bill: bill - a * p - b * q,
    "tank": lambda v, num, den: v - v * num / den,
    "equation": lambda a, b, c, d: (d - b) / (a - c),
    "avg_speed": lambda v, t1, w, t2: (v * t1 + w * t2) / (t1 + t2),
    "up_down": lambda p, up, down: p * (100 + up) / 100 * (100 - down) / 100,
    "ratio": lambda total, a, b: total * b / (a + b),
    "missing_value": lambda k, m, k1, *known: k * m - sum(known),
}
COUNT_TEMPLATES = {"add_more", "give_away", "pages", "bus", "boxes", "share", "buy_give",
                   "garden", "percent_of", "fraction_left", "tank"}


@pytest.fixture(scope="module")
def prompts():
    return builtin_math_prompts(1024, seed=0)


def test_size_fields_and_difficulty_mix(prompts):
    assert len(prompts) == 1024
    for p in prompts:
        assert set(p) == {"id", "prompt", "label", "difficulty", "template"}
        assert p["prompt"].endswith(" " + INSTRUCTION)
        assert INSTRUCTION.endswith("put the final answer in \\boxed{}.")
    assert Counter(p["difficulty"] for p in prompts) == {1: 205, 2: 205, 3: 205, 4: 205, 5: 204}
    assert len({p["id"] for p in prompts}) == 1024
    assert len({p["prompt"] for p in prompts}) >= 980  # a few easy problems may repeat


def test_every_answer_recomputed_from_the_text(prompts):
    seen = Counter()
    for p in prompts:
        body = p["prompt"][: -len(INSTRUCTION)]
        nums = [Fraction(x) for x in re.findall(r"\d+(?:\.\d+)?", body)]
        expected = SOLVERS[p["template"]](*nums)
        label = Fraction(p["label"])
        assert label == expected, p
        assert label >= 0, p
        assert (label * 100).denominator == 1, p  # at most two decimal places
        if p["template"] in COUNT_TEMPLATES:
            assert label.denominator == 1 and label > 0, p
        seen[p["template"]] += 1
    assert set(seen) == set(SOLVERS)  # every template is exercised and checked


def test_label_text_is_canonical(prompts):
    for p in prompts:
        assert re.fullmatch(r"(0|[1-9]\d*)(\.\d*[1-9])?", p["label"]), p["label"]


def test_each_difficulty_uses_several_templates(prompts):
    by_level = {}
    for p in prompts:
        by_level.setdefault(p["difficulty"], set()).add(p["template"])
    assert all(len(t) == 5 for t in by_level.values()), by_level
    assert len(set().union(*by_level.values())) == 25


def test_deterministic_and_pinned():
    a = builtin_math_prompts(1024, seed=0)
    b = builtin_math_prompts(1024, seed=0)
    assert a == b
    digest = hashlib.sha256(json.dumps(a, sort_keys=True).encode()).hexdigest()
    # Pinned so a change to the generator that alters the set cannot go unnoticed.
    assert digest == PINNED_SHA256
    assert a[0]["prompt"].startswith("Sam has 25 pencils. He buys 5 more pencils.")


PINNED_SHA256 = "bdb78a3323407a463994594ad0040a07e7749cef478c12fcb2e7c0df10a2b793"


def test_prefix_stable_and_seeds_differ():
    long = builtin_math_prompts(300, seed=7)
    assert builtin_math_prompts(100, seed=7) == long[:100]
    assert make_problem(250, seed=7) == long[250]
    other = builtin_math_prompts(300, seed=8)
    assert sum(x["prompt"] == y["prompt"] for x, y in zip(long, other)) < 30
    assert builtin_math_prompts(0) == []
    with pytest.raises(ValueError):
        builtin_math_prompts(-1)


def test_large_and_other_seeds_stay_correct():
    for seed in (1, 12345, 2**40):
        for p in builtin_math_prompts(500, seed=seed):
            nums = [Fraction(x) for x in re.findall(r"\d+(?:\.\d+)?", p["prompt"])]
            assert Fraction(p["label"]) == SOLVERS[p["template"]](*nums), p


# ---- loader -------------------------------------------------------------------------------

ROWS = [
    {"input": "What is 2 + 3?", "label": "5", "id": "a"},
    {"input": [{"role": "system", "content": "Be brief."},
               {"role": "user", "content": "What is 4 * 4?"}], "label": 16},
    {"input": "Half of 9?", "label": 4.5, "datasource": "mine"},
]


def _check_rows(recs, name):
    assert [r["prompt"] for r in recs] == [ROWS[0]["input"], ROWS[1]["input"], ROWS[2]["input"]]
    assert [r["label"] for r in recs] == ["5", "16", "4.5"]
    assert [r["id"] for r in recs] == ["a", f"{name}:1", f"{name}:2"]
    assert [r["datasource"] for r in recs] == ["default", "default", "mine"]


def test_load_json_jsonl_and_gz(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps(ROWS))
    _check_rows(load_prompt_file(tmp_path / "p.json"), "p.json")
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    _check_rows(load_prompt_file(str(tmp_path / "p.jsonl")), "p.jsonl")
    with gzip.open(tmp_path / "p.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in ROWS))
    _check_rows(load_prompt_file(tmp_path / "p.jsonl.gz"), "p.jsonl.gz")
    assert len(load_prompt_file(tmp_path / "p.json", limit=2)) == 2


def test_load_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [{"question": "What is 7 - 2?", "answer": "5"}, {"question": "8 / 2?", "answer": "4"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    recs = load_prompt_file(tmp_path / "p.parquet", input_key="question", label_key="answer")
    assert [(r["prompt"], r["label"], r["id"]) for r in recs] == [
        ("What is 7 - 2?", "5", "p.parquet:0"), ("8 / 2?", "4", "p.parquet:1")]


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError("no pyarrow")
        return real_import(name, *args, **kwargs)

    (tmp_path / "p.parquet").write_bytes(b"PAR1")
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ValueError, match=r"p\.parquet.*needs pyarrow"):
        load_prompt_file(tmp_path / "p.parquet")


def test_custom_keys_and_no_labels(tmp_path):
    (tmp_path / "q.jsonl").write_text(json.dumps({"q": "hi", "uid": 7}) + "\n")
    recs = load_prompt_file(tmp_path / "q.jsonl", input_key="q", label_key=None, id_key="uid")
    assert recs == [{"prompt": "hi", "label": None, "id": "7", "datasource": "default"}]


def test_missing_input_key_names_file_index_key_and_keys(tmp_path):
    rows = [{"input": "ok", "label": "1"}, {"question": "no input", "label": "2"}]
    (tmp_path / "bad.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError) as e:
        load_prompt_file(tmp_path / "bad.json")
    msg = str(e.value)
    assert "bad.json" in msg and "record 1" in msg and "'input'" in msg
    assert "['label', 'question']" in msg


def test_jsonl_errors_give_record_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"input": "a", "label": "1"}\n\n{"input": "b"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: record 1 \(line 3\): no label_key 'label'"):
        load_prompt_file(p)
    p.write_text('{"input": "a", "label": "1"}\n{"input": \n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: record 1 \(line 2\): not valid JSON"):
        load_prompt_file(p)


@pytest.mark.parametrize("content, pattern", [
    ('{"input": "a"}', r"must hold a list of objects"),
    ('[1, 2]', r"record 0: expected an object"),
    ('[{"input": 5, "label": "1"}]', r"record 0: key 'input' must be a string or a list"),
    ('[{"input": [{"role": "user"}], "label": "1"}]', r"message 0 must be an object"),
    ('[{"input": [], "label": "1"}]', r"chat message list is empty"),
    ('[{"input": "a", "label": [1]}]', r"record 0, key 'label': the label must be"),
    ('[{"input": "a", "label": "1"},', r"not valid JSON"),
])
def test_bad_json_records(tmp_path, content, pattern):
    p = tmp_path / "x.json"
    p.write_text(content)
    with pytest.raises(ValueError, match=pattern) as e:
        load_prompt_file(p)
    assert str(p) in str(e.value)


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match=r"not found: .*nope\.jsonl"):
        load_prompt_file(tmp_path / "nope.jsonl")
    (tmp_path / "p.csv").write_text("input,label\n")
    with pytest.raises(ValueError, match=r"p\.csv: unknown prompt file type '\.csv'"):
        load_prompt_file(tmp_path / "p.csv")


def test_load_prompts_sources(tmp_path):
    recs = load_prompts("builtin")
    assert len(recs) == 1024 and recs[0]["datasource"] == "builtin"
    assert recs[5]["label"] == builtin_math_prompts(6)[5]["label"]
    assert len(load_prompts("builtin:50")) == 50
    assert load_prompts("builtin:10", seed=3)[9]["prompt"] == make_problem(9, seed=3)["prompt"]
    assert len(load_prompts("builtin:50", limit=7)) == 7
    with pytest.raises(ValueError, match="builtin:N"):
        load_prompts("builtin:many")
    (tmp_path / "p.json").write_text(json.dumps(ROWS))
    _check_rows(load_prompts(str(tmp_path / "p.json")), "p.json")
    with pytest.raises(ValueError, match="not found"):
        load_prompts(str(tmp_path / "missing.json"))


# ---- rendering ----------------------------------------------------------------------------

class FakeTokenizer:
    """A stand-in for a Hugging Face tokenizer: one id per character, ChatML-like template.

    ``mode`` picks what apply_chat_template(tokenize=True) returns: transformers 4 gives a
    list, transformers 5 a BatchEncoding (a dict with input_ids), some a batch of one, an
    array, or, from broken templates, a string.
    """

    def __init__(self, mode="list"):
        self.mode = mode
        self.calls = []

    def encode(self, text, add_special_tokens=True):
        self.calls.append(("encode", text, add_special_tokens))
        return ([1] if add_special_tokens else []) + [ord(c) for c in text]

    def template(self, messages, add_generation_prompt):
        text = "".join(f"<{m['role']}>{m['content']}|" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=True, **kw):
        self.calls.append(("template", messages, add_generation_prompt, tokenize))
        text = self.template(messages, add_generation_prompt)
        if not tokenize or self.mode == "str":
            return text
        ids = [ord(c) for c in text]
        if self.mode == "dict":
            return {"input_ids": ids, "attention_mask": [1] * len(ids)}
        if self.mode == "batch":
            return [ids]
        if self.mode == "array":
            np = pytest.importorskip("numpy")
            return {"input_ids": np.array([ids])}
        return ids


def _ids(text):
    return [ord(c) for c in text]


@pytest.mark.parametrize("mode", ["list", "dict", "batch", "array", "str"])
def test_render_with_chat_template_every_return_type(mode):
    tok = FakeTokenizer(mode)
    ids = render_prompt(tok, "What is 2+2?")
    assert ids == _ids("<user>What is 2+2?|<assistant>")
    assert tok.calls[0][2] is True  # add_generation_prompt
    assert all(type(t) is int for t in ids)


def test_render_system_messages_and_records():
    tok = FakeTokenizer()
    assert render_prompt(tok, "Q", system="S") == _ids("<system>S|<user>Q|<assistant>")
    chat = [{"role": "system", "content": "Own"}, {"role": "user", "content": "Q"}]
    # The prompt's own system message wins over the default one.
    assert render_prompt(tok, chat, system="S") == _ids("<system>Own|<user>Q|<assistant>")
    record = builtin_math_prompts(1)[0]
    assert render_prompt(tok, record) == _ids(f"<user>{record['prompt']}|<assistant>")
    with pytest.raises(ValueError, match="'prompt' key"):
        render_prompt(tok, {"input": "x"})


def test_render_without_template():
    tok = FakeTokenizer()
    assert render_prompt(tok, "Hi", apply_chat_template=False) == [1] + _ids("Hi")
    assert render_prompt(tok, "Hi", apply_chat_template=False,
                         input_template="Q: {}\nA:") == [1] + _ids("Q: Hi\nA:")
    assert render_prompt(tok, "Hi", apply_chat_template=False,
                         add_special_tokens=False) == _ids("Hi")
    assert not any(c[0] == "template" for c in tok.calls)
    with pytest.raises(ValueError, match="needs apply_chat_template"):
        render_prompt(tok, [{"role": "user", "content": "x"}], apply_chat_template=False)


def test_render_rejects_non_token_results():
    class Bad(FakeTokenizer):
        def apply_chat_template(self, messages, **kw):
            return {"attention_mask": [1]}
    with pytest.raises(TypeError, match="without 'input_ids'"):
        render_prompt(Bad(), "x")

    class Floats(FakeTokenizer):
        def apply_chat_template(self, messages, **kw):
            return [1.5, 2.0]
    with pytest.raises(TypeError, match="did not return token ids"):
        render_prompt(Floats(), "x")


def test_check_prompt_ids_refuses_what_the_engine_cannot_answer():
    from openrlhf_srt.data.prompts import check_prompt_ids

    kw = {"max_model_len": 16, "max_new_tokens": 6, "vocab_size": 100}
    check_prompt_ids(list(range(10)), "p.jsonl: record 0", **kw)  # 10 + 6 = 16 fits
    for ids, message in [
        (list(range(11)), ("p.jsonl: record 0: the prompt is 11 tokens; with 6 new tokens "
                           "that is 17, over the engine's max_model_len 16")),
        ([5, 100], "p.jsonl: record 0: token id 100 is outside the vocabulary of 100 tokens"),
        ([5, 2**32 + 5], "p.jsonl: record 0: token id 4294967301 is outside the vocabulary"),
        ([], "p.jsonl: record 0: the prompt renders to no tokens"),
    ]:
        with pytest.raises(ValueError) as e:
            check_prompt_ids(ids, "p.jsonl: record 0", **kw)
        assert str(e.value).startswith(message), str(e.value)


def test_modules_import_no_torch_vllm_or_cache():
    import subprocess
    import sys
    code = ("import sys, openrlhf_srt.data.prompts, openrlhf_srt.data.reward, "
            "openrlhf_srt.data.math_prompts; "
            "bad = [m for m in ('torch', 'vllm', 'transformers', 'openrlhf_srt.cache') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    import os
    from pathlib import Path
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr
