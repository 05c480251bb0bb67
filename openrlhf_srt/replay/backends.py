"""Tree backends for the replay's TreeDrafter: each is a factory ``max_depth -> tree``.

All trees offer ``extend(seq_id, tokens)``, ``remove(seq_id)`` and
``speculate(context, max_tokens, factor, offset, min_prob, tree, key=None)``.

- ``python``: ``openrlhf_srt.replay.suffix_tree.SuffixTree`` (always available);
- ``arctic``: ArcticInference's ``SuffixTree`` (``make bench`` installs it), adapted to the
  same calls; vLLM's cache passes it at most the last ``max_depth`` context tokens, so the
  adapter does too.

``CacheDrafter`` replays the project's cache as a whole (its own rules), for the
``native-*`` and ``reference-*`` strategies.
"""

from __future__ import annotations

from collections.abc import Sequence

from openrlhf_srt.replay.drafters import Drafter
from openrlhf_srt.replay.suffix_tree import Draft, SuffixTree

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


class CacheDrafter(Drafter):
    """The project's cache as a replay drafter, with the cache's own rules: the native
    ``openrlhf_srt.cache.TreeCache`` or its pure-Python reference
    (``reference_cache.ReferenceCache``), which must replay the same.

    Its rule decides the trees: "prompt" (per-prompt tree, which also indexes the prompt),
    "global", "best" or "merge" (see docs/cache.md). ``history`` defers inserting a step's
    sequences until the step ends (RhymeRL); ``window`` drops steps older than W. Run-ahead
    rollouts are registered as sequences tagged "runahead" before the step and removed after.
    """

    def __init__(self, name: str, rule: str = "prompt", max_depth: int = 24,
                 min_prob: float = 0.1, tree: bool = False, history: bool = False,
                 window: int = 0, global_weight: float = 1.0, reference: bool = False) -> None:
        from openrlhf_srt.cache import CacheConfig, TreeCache
        from openrlhf_srt.replay.reference_cache import ReferenceCache

        self.name = name
        self.tree, self.history, self.window, self.reference = tree, history, window, reference
        self.config = CacheConfig(max_depth=max_depth, rule=rule, min_prob=min_prob,
                                  global_weight=global_weight)
        self._cache = (ReferenceCache if reference else TreeCache)(self.config)
        self._done: list = []
        self._runahead_ids: list[int] = []
        self._next_runahead_id = -1  # replayed sequences have ids >= 0
        self._step = 0

    def settings(self) -> dict[str, object]:
        c = self.config
        out: dict[str, object] = {"cache": "python reference" if self.reference else "native",
                                  "rule": c.rule, "max_depth": c.max_depth,
                                  "min_prob": c.min_prob, "tree_spec": self.tree}
        if c.rule == "merge":
            out["global_weight"] = c.global_weight
        if self.history:
            out["insert"] = "history (after the step)"
        if self.window:
            out["window_steps"] = self.window
        return out

    def begin_step(self, step: int, runahead=()) -> None:
        self._step = step
        if self.window:
            self._cache.drop_steps_before(step - self.window)
        for r in runahead:
            sid = self._next_runahead_id
            self._next_runahead_id -= 1
            self._cache.add_sequence(sid, r.prompt_key, r.prompt, step=step, tag="runahead")
            self._cache.extend(sid, r.response)
            self._cache.finish_sequence(sid)
            self._runahead_ids.append(sid)

    def start(self, seq) -> None:
        if not self.history:
            self._cache.add_sequence(seq.seq_id, seq.prompt_key, seq.prompt, step=seq.step)

    def draft(self, seq, budget: int) -> Draft:
        if self.history:
            return self._history_draft(seq, budget)
        d = self._cache.draft(seq.seq_id, budget, tree=self.tree)
        return _from_native(d, self.tree)

    def _history_draft(self, seq, budget: int) -> Draft:
        d = self._cache.draft_context(seq.prompt_key, seq.context, budget,
                                      response_start=len(seq.prompt), tree=self.tree)
        return _from_native(d, self.tree)

    def extend(self, seq, tokens) -> None:
        if not self.history:
            self._cache.extend(seq.seq_id, list(tokens))

    def finish(self, seq) -> None:
        if self.history:
            self._done.append(seq)
        else:
            self._cache.finish_sequence(seq.seq_id)

    def end_step(self, step: int) -> None:
        for seq in self._done:
            self._cache.add_sequence(seq.seq_id, seq.prompt_key, seq.prompt, step=seq.step)
            self._cache.extend(seq.seq_id, seq.response)
            self._cache.finish_sequence(seq.seq_id)
        self._done = []
        for sid in self._runahead_ids:
            self._cache.remove_sequence(sid)
        self._runahead_ids = []


def _from_native(d, tree: bool) -> Draft:
    if tree:
        tokens = [int(t) for t in d.tree_tokens]
        return Draft(tokens, [int(p) for p in d.tree_parents],
                     [float(p) for p in d.tree_probs], float(d.score), int(d.match_len))
    tokens = [int(t) for t in d.tokens]
    return Draft(tokens, list(range(-1, len(tokens) - 1)), [float(p) for p in d.probs],
                 float(d.score), int(d.match_len))
