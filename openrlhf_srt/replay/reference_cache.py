"""A small pure-Python reference of the tree cache's counting and drafting rules.

Uncompressed and slow on purpose: every substring of length <= max_depth of every text is
counted in a dict, and drafting follows docs/cache.md literally. The native core
(``openrlhf_srt.cache``) must give the same node set, counts and drafts: the property tests
(tests/cache/test_cache_reference.py) compare the two, and ``ReferenceCache`` replays the native
cache's rules in the replay simulator (the ``reference-*`` strategies), where a replay of it
must equal the native one.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from openrlhf_srt.cache import CacheConfig


@dataclass(frozen=True)
class ReferenceDraft:
    """The reference's draft: the fields of the native ``openrlhf_srt.cache.Draft``, same
    names and dtypes (the native type cannot be built from Python)."""

    tokens: np.ndarray        # int32, the greedy path
    probs: np.ndarray         # float32, path probability of each token
    tree_tokens: np.ndarray   # int32, the draft tree (empty when none was asked for)
    tree_parents: np.ndarray  # int32, parent index of each tree token, -1: the context
    tree_probs: np.ndarray    # float32
    match_len: int
    score: float
    source: str | None        # "prompt", "global", "merged"; None without a match


class ReferenceTree:
    def __init__(self, max_depth: int):
        self.depth = max_depth
        self.count: dict[tuple, int] = defaultdict(int)
        self.nexts: dict[tuple, dict[int, int]] = defaultdict(lambda: defaultdict(int))

    @classmethod
    def build(cls, texts, max_depth):
        t = cls(max_depth)
        for text in texts:
            t.add(list(text))
        return t

    def add(self, text, start: int = 0, sign: int = 1):
        """Count the occurrences that end at ``text[start:]`` (the ones ending before
        ``start`` are counted already: appending tokens to a text); ``sign`` -1 subtracts."""
        for j in range(start, len(text)):
            for i in range(max(0, j + 1 - self.depth), j + 1):
                u = tuple(text[i : j + 1])
                self.count[u] += sign
                self.nexts[u[:-1]][u[-1]] += sign

    def remove(self, text):
        self.add(text, 0, -1)

    def cont(self, u) -> int:
        if len(u) >= self.depth:
            return 0
        return sum(self.nexts[u].values()) if u in self.nexts else 0

    def children(self, u):
        """[(token, count)] sorted by count desc, token asc."""
        if len(u) >= self.depth or u not in self.nexts:
            return []
        return sorted(((t, c) for t, c in self.nexts[u].items() if c > 0), key=lambda x: (-x[1], x[0]))

    def nodes(self) -> dict[tuple, tuple[int, int]]:
        """The canonical node set: a branch, or some occurrence ends here."""
        out = {}
        for u, c in self.count.items():
            if c == 0:
                continue
            k = self.cont(u)
            if k < c or len(self.children(u)) >= 2:
                out[u] = (c, k)
        return out

    def match(self, ctx, cap):
        for L in range(min(len(ctx), cap, self.depth - 1), 0, -1):
            u = tuple(ctx[len(ctx) - L :])
            if self.count.get(u, 0) > 0 and self.cont(u) > 0:
                return u
        return None


def candidates(ta, ua, tb, ub, w):
    """[(token, p, ua', ub')] sorted by p desc, token asc."""
    da = ta.cont(ua) if ua is not None else 0
    db = tb.cont(ub) if ub is not None else 0
    if da == 0 and db == 0:
        return []
    ca = dict(ta.children(ua)) if da else {}
    cb = dict(tb.children(ub)) if db else {}
    out = []
    for t in set(ca) | set(cb):
        if da and db:
            p = (ca.get(t, 0) + w * cb.get(t, 0)) / (da + w * db)
        elif da:
            p = ca[t] / da
        else:
            p = cb[t] / db
        na = ua + (t,) if t in ca else None
        nb = ub + (t,) if t in cb else None
        out.append((t, p, na, nb))
    out.sort(key=lambda x: (-x[1], x[0]))
    return out


def chain(ta, ua, tb, ub, w, budget, min_prob):
    toks, probs, score, prob = [], [], 0.0, 1.0
    for _ in range(budget):
        c = candidates(ta, ua, tb, ub, w)
        if not c:
            break
        q = prob * c[0][1]
        if q < min_prob:
            break
        prob = q
        toks.append(c[0][0])
        probs.append(q)
        score += q
        ua, ub = c[0][2], c[0][3]
    return toks, probs, score


def tree(ta, ua, tb, ub, w, budget, min_prob):
    heap, seq = [], 0
    toks, parents, probs = [], [], []

    def push(ua, ub, prob, parent):
        nonlocal seq
        for t, p, na, nb in candidates(ta, ua, tb, ub, w):
            heapq.heappush(heap, (-(prob * p), seq, t, parent, na, nb))
            seq += 1

    if budget <= 0:
        return toks, parents, probs
    push(ua, ub, 1.0, -1)
    while heap and len(toks) < budget:
        negq, _, t, parent, na, nb = heapq.heappop(heap)
        if -negq < min_prob:
            break
        toks.append(t)
        parents.append(parent)
        probs.append(-negq)
        if len(toks) < budget:
            push(na, nb, -negq, len(toks) - 1)
    return toks, parents, probs


def draft(ptree, gtree, context, response_start, *, rule, max_depth, budget, min_prob, w=1.0):
    """Returns (path tokens, path probs, tree tokens, parents, tree probs, match_len, source)."""
    empty = ReferenceTree(max_depth)
    if budget <= 0:
        return [], [], [], [], [], 0, None
    cap = max(1, min(max_depth - 1, max_depth - budget))
    ua = ptree.match(context, cap) if ptree is not None else None
    ub = gtree.match(context[response_start:], cap)
    ptree = ptree if ptree is not None else empty
    if rule == "best":
        ca = chain(ptree, ua, empty, None, w, budget, min_prob)
        cb = chain(empty, None, gtree, ub, w, budget, min_prob)
        use_b = cb[2] > ca[2] or (ua is None and ub is not None)
        if use_b:
            src = (empty, None, gtree, ub)
            path, m, source = cb, len(ub) if ub else 0, "global" if ub else None
        else:
            src = (ptree, ua, empty, None)
            path, m, source = ca, len(ua) if ua else 0, "prompt" if ua else None
    else:
        if rule == "global":
            ua = None
        if rule == "prompt":
            ub = None
        src = (ptree, ua, gtree, ub)
        path = chain(*src, w, budget, min_prob)
        m = max(len(ua) if ua else 0, len(ub) if ub else 0)
        source = {(1, 1): "merged", (1, 0): "prompt", (0, 1): "global", (0, 0): None}[
            (ua is not None, ub is not None)
        ]
    t = tree(*src, w, budget, min_prob)
    return path[0], path[1], t[0], t[1], t[2], m, source


class ReferenceCache:
    """The native cache's sequence lifecycle over ReferenceTrees: the calls of
    ``openrlhf_srt.cache.TreeCache`` that the replay makes, with the same results.

    Per prompt key a tree of every sequence's prompt + response, plus one global tree of the
    responses; ``draft`` of a running sequence is ``draft_context`` of its whole text, as the
    property tests check for the native cache. Nothing is evicted (no byte budget) and input
    is not validated beyond what would otherwise go wrong silently.
    """

    def __init__(self, config: CacheConfig | None = None):
        self.config = config if config is not None else CacheConfig()
        self._prompt_trees: dict[int, ReferenceTree] = {}
        self._global = ReferenceTree(self.config.max_depth)
        self._seqs: dict[int, dict] = {}  # id -> key, prompt, response, step, running

    def add_sequence(self, seq_id: int, prompt_key: int, prompt_token_ids, *, step: int,
                     tag: str = "rollout") -> None:
        if seq_id in self._seqs:
            raise ValueError(f"seq_id {seq_id} is already registered")
        prompt = [int(t) for t in prompt_token_ids]
        self._seqs[seq_id] = {"key": prompt_key, "prompt": prompt, "response": [],
                              "step": step, "tag": tag, "running": True}
        tree = self._prompt_trees.setdefault(prompt_key, ReferenceTree(self.config.max_depth))
        tree.add(prompt)

    def extend(self, seq_id: int, tokens) -> None:
        s = self._running(seq_id)
        done = len(s["response"])
        s["response"] += [int(t) for t in tokens]
        self._prompt_trees[s["key"]].add(s["prompt"] + s["response"], len(s["prompt"]) + done)
        self._global.add(s["response"], done)

    def finish_sequence(self, seq_id: int) -> None:
        self._running(seq_id)["running"] = False

    def remove_sequence(self, seq_id: int) -> None:
        s = self._seqs.pop(seq_id)
        self._prompt_trees[s["key"]].remove(s["prompt"] + s["response"])
        self._global.remove(s["response"])
        if not any(o["key"] == s["key"] for o in self._seqs.values()):
            del self._prompt_trees[s["key"]]

    def drop_steps_before(self, step: int) -> int:
        victims = sorted(i for i, s in self._seqs.items() if s["step"] < step and not s["running"])
        for i in victims:
            self.remove_sequence(i)
        return len(victims)

    def draft(self, seq_id: int, max_tokens: int | None = None, min_prob: float | None = None,
              *, tree: bool = True) -> ReferenceDraft:
        s = self._running(seq_id)
        return self.draft_context(s["key"], s["prompt"] + s["response"], max_tokens, min_prob,
                                  response_start=len(s["prompt"]), tree=tree)

    def draft_context(self, prompt_key: int, context_tokens, max_tokens: int | None = None,
                      min_prob: float | None = None, *, response_start: int = 0,
                      tree: bool = True) -> ReferenceDraft:
        c = self.config
        budget = c.max_draft_tokens if max_tokens is None else max_tokens
        min_prob = c.min_prob if min_prob is None else min_prob
        path, probs, ttoks, parents, tprobs, match_len, source = draft(
            self._prompt_trees.get(prompt_key), self._global, list(context_tokens),
            response_start, rule=c.rule, max_depth=c.max_depth, budget=budget,
            min_prob=min_prob, w=c.global_weight)
        if not tree:  # the native cache expands no tree when none is asked for
            ttoks, parents, tprobs = [], [], []
        return ReferenceDraft(np.asarray(path, np.int32), np.asarray(probs, np.float32),
                     np.asarray(ttoks, np.int32), np.asarray(parents, np.int32),
                     np.asarray(tprobs, np.float32), match_len, float(sum(probs)), source)

    def dump(self, prompt_key: int | None = None) -> dict[tuple[int, ...], tuple[int, int]]:
        """{path: (count, continued count)} of every node, as ``TreeCache.dump`` gives it."""
        return (self._global if prompt_key is None else self._prompt_trees[prompt_key]).nodes()

    def _running(self, seq_id: int) -> dict:
        s = self._seqs[seq_id]
        if not s["running"]:
            raise ValueError(f"seq_id {seq_id} is finished")
        return s
