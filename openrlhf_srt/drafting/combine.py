"""Rules that turn the drafts (or counts) of several trees into one draft.

A combiner is called as ``combiner(drafter, seq, trees, budget)`` where ``trees`` is
``[local, per-prompt?, global?]`` of a ``TreeDrafter``; it returns one ``Draft``.

- ``best``: each tree drafts on its own and the highest score wins (ties: the earlier tree),
  which is what vLLM's ``suffix`` method does with its local and global trees.
"""

from __future__ import annotations

from openrlhf_srt.drafting.suffix_tree import Draft


def best(drafter, seq, trees, budget: int) -> Draft:
    chosen = Draft()
    for i, tree in enumerate(trees):
        d = drafter.speculate(tree, seq, budget, local=(i == 0))
        if i == 0 or d.score > chosen.score:
            chosen = d
    return chosen


best.describe = lambda: "best: highest-scoring single-tree draft"  # type: ignore[attr-defined]
