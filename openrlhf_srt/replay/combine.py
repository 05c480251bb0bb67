"""Rules that turn the drafts (or counts) of several trees into one draft.

A combiner is called as ``combiner(drafter, seq, trees, budget)`` where ``trees`` is
``[(role, tree), ...]`` with roles "local", "prompt" and "global" (a ``TreeDrafter``'s
trees); it returns one ``Draft``.

- ``best``: each tree drafts on its own and the highest score wins (ties: the earlier tree),
  which is what vLLM's ``suffix`` method does with its local and global trees.
- ``Merge``: the trees' counts are pooled, ``count = sum_r weight_r * count_r`` over the
  trees that match the same context suffix, and one draft is expanded over the pooled
  counts (needs the pure-Python tree). A child's probability is its pooled count over the
  parent's pooled count plus ``alpha``. The match length is chosen as ``best`` chooses it
  (highest score over all matched lengths, the longer winning ties; of lengths with the same
  pooled count only the longest is expanded: its occurrences are those of the shorter one,
  so its draft is the same up to the depth bound) or, with ``support`` > 0, as the longest
  match whose pooled count is at least ``support``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from openrlhf_srt.replay.suffix_tree import Draft


def best(drafter, seq, trees, budget: int) -> Draft:
    chosen = Draft()
    for i, (role, tree) in enumerate(trees):
        d = drafter.speculate(tree, seq, budget, role)
        if i == 0 or d.score > chosen.score:
            chosen = d
    return chosen


best.describe = lambda: "best: highest-scoring single-tree draft"  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Merge:
    local: float = 1.0
    prompt: float = 1.0
    glob: float = 1.0
    alpha: float = 0.0
    support: float = 0.0
    top_children: int = 16  # children per node considered (most frequent first)
    continued: bool = False  # denominator: occurrences that continue, not all occurrences
    max_match: int = 0  # longest context suffix matched (0: max_depth - 1)
    backoff: float = 0.0  # with support: also pool shorter matches, weight x backoff per token

    def describe(self) -> str:
        pick = f"longest match with pooled count >= {self.support:g}" if self.support else \
            "best-scoring match length"
        if self.max_match:
            pick += f" (at most {self.max_match} tokens)"
        if self.continued:
            pick += ", p = count / continued count"
        if self.backoff:
            pick += f", shorter matches pooled with weight x{self.backoff:g} per token"
        return (f"merge: pooled counts, weights local {self.local:g} / prompt {self.prompt:g} / "
                f"global {self.glob:g}, alpha {self.alpha:g}, {pick}")

    def __call__(self, drafter, seq, trees, budget: int) -> Draft:
        weight = {"local": self.local, "prompt": self.prompt, "global": self.glob}
        ctx = seq.context
        per_tree = []
        for role, tree in trees:
            w = weight[role]
            if w > 0:
                per_tree.append((w, tree.matches(ctx, drafter.match_key(seq, role))))
        longest = max((len(m) for _, m in per_tree), default=0)
        if self.max_match:
            longest = min(longest, self.max_match)
        states = []
        for length in range(1, longest + 1):
            states.append([(w, m[length - 1]) for w, m in per_tree if len(m) >= length])
        if self.support:
            for length in range(longest, 0, -1):
                state = states[length - 1]
                if sum(w * self._denominator(n) for w, n in state) >= self.support or length == 1:
                    factor = self.backoff
                    for shorter in range(length - 1, 0, -1):
                        if factor <= 0:
                            break
                        state = state + [(w * factor, n) for w, n in states[shorter - 1]]
                        factor *= self.backoff
                    return self._expand(drafter, state, length, budget)
            return Draft()
        chosen = Draft()
        totals = [sum(w * self._denominator(n) for w, n in state) for state in states]
        for length, state in enumerate(states, start=1):
            if length < longest and totals[length] == totals[length - 1]:
                continue  # the longer match has the same occurrences, hence the same draft
            d = self._expand(drafter, state, length, budget)
            if d.score >= chosen.score:
                chosen = d
        return chosen

    def _denominator(self, node) -> int:
        return node.cont if self.continued else node.count

    def _expand(self, drafter, state, length: int, budget: int) -> Draft:
        limit = max(0, min(budget, int(length * drafter.factor + drafter.offset + 1e-6)))
        d = Draft(match_len=length)
        heap: list = []
        tick = 0

        def push(state, prob: float, parent: int) -> None:
            nonlocal tick
            total = sum(w * self._denominator(n) for w, n in state) + self.alpha
            if total <= 0:
                return
            pooled: dict[int, list] = {}
            for w, n in state:
                for child in n.order[: self.top_children]:
                    pooled.setdefault(child.token, []).append((w, child))
            ranked = []
            for token, kids in pooled.items():
                p = prob * sum(w * c.count for w, c in kids) / total
                if p >= drafter.min_prob:
                    ranked.append((p, token, kids))
            if not drafter.tree_spec and ranked:
                ranked = [max(ranked, key=lambda x: x[0])]
            for p, token, kids in ranked:
                heapq.heappush(heap, (-p, tick, token, kids, parent))
                tick += 1

        push(state, 1.0, -1)
        while heap and len(d.token_ids) < limit:
            neg, _, token, kids, parent = heapq.heappop(heap)
            d.token_ids.append(token)
            d.parents.append(parent)
            d.probs.append(-neg)
            d.score -= neg
            if not drafter.tree_spec:
                heap.clear()
            push(kids, -neg, len(d.token_ids) - 1)
        return d
