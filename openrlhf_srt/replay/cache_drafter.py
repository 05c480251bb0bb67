"""The project's cache replayed as a whole, with its own rules (the ``native-*`` and
``reference-*`` strategies)."""

from __future__ import annotations

from collections.abc import Sequence

from openrlhf_srt.cache import CacheConfig, Draft, TreeCache
from openrlhf_srt.replay.drafters import Drafter, DraftTree, RunAheadRollout, SeqState
from openrlhf_srt.replay.reference_cache import ReferenceCache


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
                 window: int = 0, global_weight: float = 1.0, reference: bool = False,
                 byte_budget: int | None = None) -> None:
        self.name = name
        self.tree, self.history, self.window, self.reference = tree, history, window, reference
        budget = {} if byte_budget is None else {"byte_budget": byte_budget}
        self.config = CacheConfig(max_depth=max_depth, rule=rule, min_prob=min_prob,
                                  global_weight=global_weight, **budget)
        self._cache = (ReferenceCache if reference else TreeCache)(self.config)
        self._done: list[SeqState] = []
        self._runahead_ids: list[int] = []
        self._next_runahead_id = -1  # replayed sequences have ids >= 0

    @property
    def cache(self):
        """The cache replayed (native TreeCache or ReferenceCache)."""
        return self._cache

    @property
    def batchable(self) -> bool:
        """Whether the batched round loop can replay it: the native cache's ``step`` drafts
        paths for registered (online) sequences only."""
        return not (self.reference or self.tree or self.history)

    def why_per_sequence(self) -> str:
        """Why this drafter needs the per-sequence loop ('' when it does not)."""
        if self.reference:
            return "pure-Python reference cache"
        if self.tree:
            return "token-tree drafts: the native batched step drafts paths only"
        if self.history:
            return "history insertion drafts with draft_context, one call per sequence"
        return ""

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

    def begin_step(self, step: int, runahead: Sequence[RunAheadRollout] = ()) -> None:
        if self.window:
            self._cache.drop_steps_before(step - self.window)
        for r in runahead:
            sid = self._next_runahead_id
            self._next_runahead_id -= 1
            self._cache.add_sequence(sid, r.prompt_key, r.prompt, step=step, tag="runahead")
            self._cache.extend(sid, r.response)
            self._cache.finish_sequence(sid)
            self._runahead_ids.append(sid)

    def start(self, seq: SeqState) -> None:
        if not self.history:
            self._cache.add_sequence(seq.seq_id, seq.prompt_key, seq.prompt, step=seq.step)

    def draft(self, seq: SeqState, budget: int) -> DraftTree:
        if self.history:
            return self._history_draft(seq, budget)
        d = self._cache.draft(seq.seq_id, budget, tree=self.tree)
        return _draft_tree(d, self.tree)

    def _history_draft(self, seq: SeqState, budget: int) -> DraftTree:
        d = self._cache.draft_context(seq.prompt_key, seq.context, budget,
                                      response_start=len(seq.prompt), tree=self.tree)
        return _draft_tree(d, self.tree)

    def extend(self, seq: SeqState, tokens: Sequence[int]) -> None:
        if not self.history:
            self._cache.extend(seq.seq_id, list(tokens))

    def finish(self, seq: SeqState) -> None:
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


def _draft_tree(d: Draft, tree: bool) -> DraftTree:
    """The cache's draft as the replay verifies it: its tree, or its best path."""
    if tree:
        tokens = [int(t) for t in d.tree_tokens]
        return DraftTree(tokens, [int(p) for p in d.tree_parents],
                         [float(p) for p in d.tree_probs], float(d.score), int(d.match_len))
    tokens = [int(t) for t in d.tokens]
    return DraftTree(tokens, list(range(-1, len(tokens) - 1)), [float(p) for p in d.probs],
                     float(d.score), int(d.match_len))
