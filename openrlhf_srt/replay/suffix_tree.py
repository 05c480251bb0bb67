"""A small pure-Python depth-bounded suffix tree with occurrence counts, used as a draft model.

It is the reference drafter of the replay simulator (docs/replay.md) until the native cache in
``openrlhf_srt.cache`` is used there, and it is written to give the *same drafts* as
ArcticInference's ``SuffixTree`` (the tree behind vLLM's ``suffix`` method) for the same inputs:

- every suffix of every inserted sequence, truncated to ``max_depth`` tokens, is a path from
  the root; a node's count is the number of occurrences of its token string (root: all tokens);
- the children of a node are kept in non-increasing count order, and ties are ordered exactly
  as ArcticInference orders them (a child whose count grows moves to the tail of its new count
  group, except that the head of a group directly behind a group of the new count moves to that
  group's head; a new child goes last), because the best child of a tie decides the draft;
- ``speculate`` tries every suffix of the context as a match (1 .. len(context) - 1 tokens,
  stopping at the first length that does not occur), drafts from each match greedily along the
  most frequent child while the product of child/parent count ratios stays >= ``min_prob``, at
  most ``min(max_tokens, match_len * factor + offset)`` tokens, and keeps the draft with the
  highest score (sum of path probabilities), the longer match winning ties.

The tree is uncompressed (one node per token), which keeps the code short; the cost is memory,
not drafting behaviour. Insertion is O(max_depth) per token.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_F32 = struct.Struct("f")


def f32(x: float) -> float:
    """Round to the nearest float32, as ArcticInference computes probabilities and scores."""
    return _F32.unpack(_F32.pack(x))[0]


class _Node:
    __slots__ = ("children", "cont", "count", "order", "token")

    def __init__(self, token: int = -1) -> None:
        self.token = token
        self.count = 0
        self.cont = 0  # occurrences that continue into a child (sum of children's counts)
        self.children: dict[int, _Node] = {}
        self.order: list[_Node] = []  # children, non-increasing count (unused at the root)


@dataclass
class Draft:
    """A draft: token ids, parent index of each token (-1: the context), path probabilities."""

    token_ids: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    score: float = 0.0
    match_len: int = 0


class SuffixTree:
    """Depth-bounded suffix tree over integer token sequences keyed by a sequence id."""

    def __init__(self, max_depth: int = 24) -> None:
        if not isinstance(max_depth, int) or max_depth < 1:
            raise ValueError(f"max_depth must be a positive integer, got {max_depth!r}")
        self.max_depth = max_depth
        self._root = _Node()
        self._seqs: dict[int, list[int]] = {}
        self._active: dict[int, list[_Node]] = {}
        self._match_cache: dict[object, tuple[int, list[_Node]]] = {}

    # ----------------------------------------------------------------- insertion / removal
    def __contains__(self, seq_id: int) -> bool:
        return seq_id in self._seqs

    @property
    def num_tokens(self) -> int:
        return self._root.count

    def sequences(self) -> list[int]:
        return list(self._seqs)

    def extend(self, seq_id: int, tokens: Iterable[int]) -> None:
        """Append tokens to sequence ``seq_id`` (created on first use)."""
        seq = self._seqs.setdefault(seq_id, [])
        active = self._active.setdefault(seq_id, [])
        root, depth = self._root, self.max_depth
        for token in tokens:
            active.append(root)
            if len(active) > depth:
                del active[0]
            root.count += 1
            seq.append(token)
            for i, node in enumerate(active):
                node.cont += 1
                child = node.children.get(token)
                if child is None:
                    child = _Node(token)
                    child.count = 1
                    node.children[token] = child
                    if node is not root:
                        node.order.append(child)
                elif node is root:
                    child.count += 1
                else:
                    _increment(node.order, child)
                active[i] = child

    def remove(self, seq_id: int) -> None:
        """Remove every suffix of sequence ``seq_id``; counts return to what they were."""
        if seq_id not in self._seqs:
            raise ValueError(f"sequence {seq_id} is not in the tree")
        seq = self._seqs.pop(seq_id)
        del self._active[seq_id]
        self._match_cache.clear()  # cached match nodes may be deleted below
        root = self._root
        for start in range(len(seq)):
            root.count -= 1
            node = root
            for token in seq[start : start + self.max_depth]:
                node.cont -= 1
                child = node.children[token]
                if child.count > 1:
                    if node is root:
                        child.count -= 1
                    else:
                        _decrement(node.order, child)
                    node = child
                    continue
                del node.children[token]
                if node is not root:
                    node.order.remove(child)
                break

    # ----------------------------------------------------------------------------- drafting
    def match(self, context: Sequence[int]) -> _Node | None:
        node = self._root
        for token in context:
            node = node.children.get(token)
            if node is None:
                return None
        return node

    def matches(self, context: Sequence[int], key: object = None) -> list[_Node]:
        """Nodes of the suffixes of ``context`` that occur in the tree, shortest first.

        Like ArcticInference, only the last ``max_depth`` context tokens are considered and
        the whole of them is never matched (match lengths 1 .. n - 1). Matches are closed
        under shortening, so entry ``i`` is the match of length ``i + 1``. With a ``key`` (one
        per running sequence whose context only grows), the previous call's matches are
        extended by the new tokens instead of re-walked from the root.
        """
        n = min(len(context), self.max_depth)
        total = len(context)
        prev = self._match_cache.get(key) if key is not None else None
        added = total - prev[0] if prev is not None and prev[0] <= total else None
        old = prev[1] if added is not None else []
        out: list[_Node] = []
        root = self._root
        for length in range(1, n):
            node = None
            base = length - added if added is not None else 0
            if 1 <= base <= len(old):
                node = old[base - 1]
                for token in context[total - added :]:
                    node = node.children.get(token)
                    if node is None:
                        break
            else:
                node = root
                for token in context[total - length :]:
                    node = node.children.get(token)
                    if node is None:
                        break
            if node is None:
                break
            out.append(node)
        if key is not None:
            self._match_cache[key] = (total, out)
        return out

    def forget(self, key: object) -> None:
        """Drop the cached matches of a finished sequence (see ``matches``)."""
        self._match_cache.pop(key, None)

    def speculate(
        self,
        context: Sequence[int],
        max_tokens: int = 16,
        factor: float = 1.0,
        offset: float = 0.0,
        min_prob: float = 0.1,
        tree: bool = False,
        key: object = None,
        alpha: float = 0.0,
    ) -> Draft:
        """Best draft over all matched suffixes of ``context`` (see the module docstring)."""
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        best, best_len = None, 0
        best_score = 0.0
        min_prob = f32(min_prob)
        for match_len, node in enumerate(self.matches(context, key), start=1):
            limit = max(0, min(max_tokens, int(match_len * factor + offset + 1e-6)))
            draft = self.expand(node, limit, min_prob, tree, alpha)
            if draft.score >= best_score:
                best, best_len, best_score = draft, match_len, draft.score
        if best is None:
            return Draft()
        best.match_len = best_len
        return best

    def expand(self, node: _Node, limit: int, min_prob: float, tree: bool = False,
               alpha: float = 0.0) -> Draft:
        """Draft up to ``limit`` tokens below a matched node: a greedy path, or best-first tree.

        A child's probability is count / (parent count + ``alpha``); ``alpha`` > 0 discounts
        estimates from few occurrences (0 is ArcticInference's estimate)."""
        if tree:
            return self._expand_tree(node, limit, min_prob, alpha)
        tokens: list[int] = []
        probs: list[float] = []
        prob = score = 1.0
        score = 0.0
        while len(tokens) < limit and node.order:
            child = node.order[0]
            if child.count != node.count or alpha:
                prob = f32(prob * f32(child.count / (node.count + alpha)))
                if prob < min_prob:
                    break
            tokens.append(child.token)
            probs.append(prob)
            score = f32(score + prob)
            node = child
        return Draft(tokens, list(range(-1, len(tokens) - 1)), probs, score)

    def _expand_tree(self, node: _Node, limit: int, min_prob: float, alpha: float) -> Draft:
        d = Draft()
        heap: list[tuple[float, int, _Node, int]] = []  # (-prob, tiebreak, node, parent index)
        tick = 0

        def push_children(n: _Node, prob: float, parent: int) -> None:
            nonlocal tick
            for child in n.order:
                p = f32(prob * f32(child.count / (n.count + alpha)))
                if p < min_prob:
                    break
                heapq.heappush(heap, (-p, tick, child, parent))
                tick += 1

        push_children(node, 1.0, -1)
        while heap and len(d.token_ids) < limit:
            neg, _, child, parent = heapq.heappop(heap)
            d.parents.append(parent)
            d.token_ids.append(child.token)
            d.probs.append(-neg)
            d.score = f32(d.score - neg)
            push_children(child, -neg, len(d.token_ids) - 1)
        return d

    def next_counts(self, node: _Node) -> list[tuple[int, int]]:
        """(token, count) of a node's children, most frequent first."""
        return [(c.token, c.count) for c in node.order]


def _increment(order: list[_Node], child: _Node) -> None:
    """Add one to a child's count and restore ArcticInference's sibling order."""
    c = child.count
    i = order.index(child)
    if i == 0 or order[i - 1].count > c + 1:
        child.count = c + 1
        return
    group = order[i - 1].count
    j = i - 1
    while j > 0 and order[j - 1].count == group:
        j -= 1
    del order[i]
    order.insert(j, child)
    child.count = c + 1


def _decrement(order: list[_Node], child: _Node) -> None:
    """Subtract one from a child's count; it becomes the head of the next lower count group."""
    c = child.count
    i = order.index(child)
    if i + 1 < len(order) and order[i + 1].count == c:
        k = i + 1
        while k < len(order) and order[k].count == c:
            k += 1
        del order[i]
        order.insert(k - 1, child)
    child.count = c - 1
