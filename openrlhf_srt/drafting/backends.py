"""Tree backends for the replay's TreeDrafter: each is a factory ``max_depth -> tree``.

All trees offer ``extend(seq_id, tokens)``, ``remove(seq_id)`` and
``speculate(context, max_tokens, factor, offset, min_prob, tree, key=None)``.

- ``python``: ``openrlhf_srt.drafting.suffix_tree.SuffixTree`` (always available);
- ``arctic``: ArcticInference's ``SuffixTree`` (``make bench`` installs it), adapted to the
  same calls; vLLM's cache passes it at most the last ``max_depth`` context tokens, so the
  adapter does too.
"""

from __future__ import annotations

from collections.abc import Sequence

from openrlhf_srt.drafting.suffix_tree import Draft, SuffixTree

BACKENDS = ("python", "arctic")


class ArcticTree:
    """ArcticInference's native suffix tree behind the pure-Python tree's interface."""

    def __init__(self, max_depth: int) -> None:
        try:
            from arctic_inference.suffix_decoding._C import SuffixTree as _Native
        except ImportError as e:  # pragma: no cover - depends on the bench extra
            raise RuntimeError(
                "the 'arctic' backend needs arctic-inference; install it with `make bench` "
                f"(see docs/replay.md): {e}"
            ) from None
        self.max_depth = max_depth
        self._tree = _Native(max_depth)

    def extend(self, seq_id: int, tokens: Sequence[int]) -> None:
        self._tree.extend(seq_id, list(tokens))

    def remove(self, seq_id: int) -> None:
        self._tree.remove(seq_id)

    def speculate(self, context: Sequence[int], max_tokens: int = 16, factor: float = 1.0,
                  offset: float = 0.0, min_prob: float = 0.1, tree: bool = False,
                  key: object = None) -> Draft:
        ctx = list(context[-self.max_depth :])
        d = self._tree.speculate(ctx, max_tokens, factor, offset, min_prob, tree)
        return Draft(list(d.token_ids), list(d.parents), list(d.probs), d.score, d.match_len)


def tree_factory(backend: str):
    if backend == "python":
        return SuffixTree
    if backend == "arctic":
        ArcticTree(1)  # fail early with the install hint
        return ArcticTree
    raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")
