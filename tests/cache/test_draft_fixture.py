"""The drafts of a deterministic replay of the reference traces, against a digest recorded
with the 32-byte-node core (main at d201be9): a change of the tree's memory layout must
not change a single draft token or probability.

Replay: per trace and rule, the records of each step are registered together and run in
lockstep through TreeCache.step (one token each, budgets varying 0..16 by sequence and
position); finished sequences of steps older than the previous one are removed (the trees
subtract and compact), and at the end every prompt is drafted for with draft_context (the prompt and
half of its last response), draft trees included. The byte budget is far above the traces, so no
eviction depends on the byte accounting. Record a new digest only when drafts are meant to
change: `python tests/cache/test_draft_fixture.py --record`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from openrlhf_srt.cache import CacheConfig, TreeCache
from openrlhf_srt.data.traces import read_traces

ROOT = Path(__file__).resolve().parents[2]
TRACES = sorted((ROOT / "tests/reference_traces").glob("*.jsonl.gz"))
FIXTURE = Path(__file__).with_name("draft_fixture.json")
RULES = ("merge", "best")
DEPTH = 32


def replay(path: Path, rule: str) -> dict:
    recs = sorted(read_traces(path), key=lambda r: (r.step, r.prompt_key, r.sample_index))
    cache = TreeCache(CacheConfig(max_depth=DEPTH, rule=rule))
    h = hashlib.sha256()
    drafted = 0
    ctx = {}  # prompt key -> (prompt, first half of its last response)
    sid = 0
    for step in sorted({r.step for r in recs}):
        batch = [r for r in recs if r.step == step]
        ids = np.arange(sid, sid + len(batch), dtype=np.int64)
        sid += len(batch)
        for i, r in zip(ids, batch):
            cache.add_sequence(int(i), r.prompt_key, r.prompt_token_ids, step=step)
            ctx[r.prompt_key] = (np.asarray(r.prompt_token_ids, np.int32),
                                 np.asarray(r.response_token_ids[: len(r.response_token_ids) // 2], np.int32))
        resps = [np.asarray(r.response_token_ids, np.int32) for r in batch]
        lengths = np.array([len(x) for x in resps])
        pos = 0
        while True:
            alive = np.nonzero(lengths > pos)[0]
            if len(alive) == 0:
                break
            toks = np.array([resps[i][pos] for i in alive], np.int32)
            budgets = ((alive + pos) % 17).astype(np.int32)
            out = cache.step(ids[alive], toks, np.ones(len(alive), np.int32), budgets)
            for arr in (out.offsets, out.tokens, out.probs, out.match_len, out.score, out.source):
                h.update(np.ascontiguousarray(arr).tobytes())
            drafted += len(out.tokens)
            for i in np.nonzero(lengths == pos + 1)[0]:
                cache.finish_sequence(int(ids[i]))
            pos += 1
        cache.drop_steps_before(step - 1)
        cache.check()
    for key in sorted(ctx):
        prompt, head = ctx[key]
        d = cache.draft_context(key, np.concatenate([prompt, head]), 16, 0.0,
                                response_start=len(prompt))
        for arr in (d.tokens, d.probs, d.tree_tokens, d.tree_parents, d.tree_probs):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(np.array([d.match_len], np.int64).tobytes())
        drafted += len(d.tokens) + len(d.tree_tokens)
    return {"sha256": h.hexdigest(), "draft_tokens": drafted}


def cases():
    return [(p, rule) for p in TRACES for rule in RULES]


@pytest.mark.parametrize(("path", "rule"), cases(), ids=lambda x: getattr(x, "name", x))
def test_drafts_equal_recorded(path, rule):
    want = json.loads(FIXTURE.read_text())[f"{path.name}:{rule}"]
    got = replay(path, rule)
    assert got["draft_tokens"] == want["draft_tokens"]
    assert got["draft_tokens"] > 1000  # the replay drafts, so the digest covers drafts
    assert got["sha256"] == want["sha256"]


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/cache/test_draft_fixture.py --record")
    FIXTURE.write_text(json.dumps({f"{p.name}:{rule}": replay(p, rule) for p, rule in cases()},
                                  indent=1) + "\n")
    print(f"wrote {FIXTURE}")
