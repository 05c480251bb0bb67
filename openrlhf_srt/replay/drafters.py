"""Drafters for the replay simulator: one small interface, several cache designs behind it.

A drafter sees what a speculative engine's proposer sees: a sequence starts (its prompt is
known), it drafts for the sequence's current context, the sequence's new tokens arrive after
each verification, the sequence finishes, and training steps begin and end. Every cache design
of docs/replay.md is a ``TreeDrafter`` with a different set of trees:

- ``local``: the sequence's own prompt and response (always present, as in vLLM's ``suffix``);
- ``prompt``: one tree per prompt key holding that prompt's responses, filled ``online``
  (own and sibling tokens as they are generated, kept across steps), from ``history`` only
  (finished responses of earlier steps, inserted when a step ends), or online within a
  ``window`` of the last W steps (older steps' responses removed);
- ``global``: one tree over all prompts' responses, filled online and kept across steps.

Trees come from a factory, so ArcticInference's tree or the native cache can replace the
pure-Python one (``backends.py``). How the drafts of several trees are combined is a
``Combiner`` (``combine.py``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from openrlhf_srt.replay.suffix_tree import Draft, SuffixTree


@dataclass
class SeqState:
    """A running sequence of the replay: its identity, prompt and response so far."""

    seq_id: int
    step: int
    prompt_key: int
    prompt: list[int]
    target: list[int]  # the recorded response the replay must reproduce
    response: list[int] = field(default_factory=list)

    @property
    def context(self) -> list[int]:
        return self.prompt + self.response


@dataclass(frozen=True)
class RunAheadRollout:
    """A partial response of one of the step's prompts generated ahead of the step (SRT's
    run-ahead): it only feeds the caches and is dropped when the step ends."""

    prompt_key: int
    prompt: list[int]
    response: list[int]


class Drafter:
    """Interface of a model-free drafter; the default methods do nothing."""

    name = "drafter"

    def settings(self) -> dict[str, object]:
        return {}

    def begin_step(self, step: int, runahead: Sequence[RunAheadRollout] = ()) -> None:
        """A training step starts, with the run-ahead rollouts of its prompts (drafters
        without a per-prompt cache ignore them)."""

    def start(self, seq: SeqState) -> None:
        """A sequence starts decoding."""

    def draft(self, seq: SeqState, budget: int) -> Draft:
        raise NotImplementedError

    def extend(self, seq: SeqState, tokens: Sequence[int]) -> None:
        """New tokens of ``seq`` (already appended to ``seq.response``)."""

    def finish(self, seq: SeqState) -> None:
        """``seq`` finished; its full response is in ``seq.response``."""

    def end_step(self, step: int) -> None:
        """Every sequence of ``step`` has finished."""


TreeFactory = Callable[[int], SuffixTree]


@dataclass
class TreeDrafter(Drafter):
    """Local tree plus optional per-prompt and global trees; drafts combined by ``combiner``."""

    name: str
    prompt_mode: str | None = "online"  # None, "online", "history" or "window"
    use_global: bool = False
    window: int = 0  # for prompt_mode == "window": keep the responses of the last W steps
    max_depth: int = 24
    min_prob: float = 0.1
    factor: float = 1.0  # draft at most factor * match length (+ offset) tokens
    offset: float = 0.0
    tree_spec: bool = False  # draft a token tree instead of a single path
    alpha: float = 0.0  # child probability = count / (parent count + alpha)
    combiner: Callable | None = None  # combine.best when None
    tree_factory: TreeFactory = SuffixTree

    def __post_init__(self) -> None:
        if self.prompt_mode not in (None, "online", "history", "window"):
            raise ValueError(f"unknown prompt_mode {self.prompt_mode!r}")
        if self.prompt_mode == "window" and self.window < 1:
            raise ValueError("prompt_mode 'window' needs window >= 1")
        self._prompt_trees: dict[int, SuffixTree] = defaultdict(self._new_tree)
        self._global = self._new_tree() if self.use_global else None
        self._local: dict[int, SuffixTree] = {}
        self._finished: list[SeqState] = []  # this step's finished sequences (history mode)
        self._by_step: dict[int, list[tuple[int, int]]] = defaultdict(list)  # (key, seq id)
        self._runahead_ids: list[tuple[int, int]] = []
        self._next_runahead_id = -1  # run-ahead sequences get negative ids
        self._step = 0

    def _new_tree(self) -> SuffixTree:
        return self.tree_factory(self.max_depth)

    def settings(self) -> dict[str, object]:
        out: dict[str, object] = {"trees": self.trees()}
        if self.tree_factory is not SuffixTree:
            out["tree_impl"] = getattr(self.tree_factory, "__name__", str(self.tree_factory))
        if self.prompt_mode == "window":
            out["window_steps"] = self.window
        out.update(max_depth=self.max_depth, min_prob=self.min_prob,
                   max_spec_factor=self.factor, tree_spec=self.tree_spec)
        if self.offset:
            out["max_spec_offset"] = self.offset
        if self.alpha:
            out["alpha"] = self.alpha
        if self.combiner is not None:
            out["combine"] = getattr(self.combiner, "describe", lambda: repr(self.combiner))()
        return out

    def trees(self) -> str:
        parts = ["local(prompt+own response)"]
        if self.prompt_mode:
            parts.append(f"per-prompt({self.prompt_mode})")
        if self.use_global:
            parts.append("global(online)")
        return " + ".join(parts)

    # ------------------------------------------------------------------------- lifecycle
    def begin_step(self, step: int, runahead: Sequence[RunAheadRollout] = ()) -> None:
        self._step = step
        if self.prompt_mode == "window":
            for old in [s for s in self._by_step if s <= step - 1 - self.window]:
                for key, sid in self._by_step.pop(old):
                    self._prompt_trees[key].remove(sid)
        if self.prompt_mode:
            for r in runahead:  # per-prompt trees hold responses only
                sid = self._next_runahead_id
                self._next_runahead_id -= 1
                self._prompt_trees[r.prompt_key].extend(sid, r.response)
                self._runahead_ids.append((r.prompt_key, sid))

    def start(self, seq: SeqState) -> None:
        local = self._new_tree()
        local.extend(0, seq.prompt)
        self._local[seq.seq_id] = local
        if self.prompt_mode in ("online", "window"):
            self._by_step[seq.step].append((seq.prompt_key, seq.seq_id))

    def extend(self, seq: SeqState, tokens: Sequence[int]) -> None:
        self._local[seq.seq_id].extend(0, tokens)
        if self.prompt_mode in ("online", "window"):
            self._prompt_trees[seq.prompt_key].extend(seq.seq_id, tokens)
        if self._global is not None:
            self._global.extend(seq.seq_id, tokens)

    def finish(self, seq: SeqState) -> None:
        for _, tree in self._trees_of(seq)[1:]:
            forget = getattr(tree, "forget", None)
            if forget is not None:
                forget(seq.seq_id)
        del self._local[seq.seq_id]
        if self.prompt_mode == "history":
            self._finished.append(seq)

    def end_step(self, step: int) -> None:
        for seq in self._finished:
            self._prompt_trees[seq.prompt_key].extend(seq.seq_id, seq.response)
        self._finished = []
        for key, sid in self._runahead_ids:  # run-ahead hints are discarded after their step
            self._prompt_trees[key].remove(sid)
        self._runahead_ids = []

    # --------------------------------------------------------------------------- drafting
    def _trees_of(self, seq: SeqState) -> list[tuple[str, SuffixTree]]:
        trees = [("local", self._local[seq.seq_id])]
        if self.prompt_mode:
            trees.append(("prompt", self._prompt_trees[seq.prompt_key]))
        if self._global is not None:
            trees.append(("global", self._global))
        return trees

    @staticmethod
    def match_key(seq: SeqState, role: str) -> int:
        return 0 if role == "local" else seq.seq_id

    def draft(self, seq: SeqState, budget: int) -> Draft:
        from openrlhf_srt.replay import combine

        combiner = self.combiner or combine.best
        return combiner(self, seq, self._trees_of(seq), budget)

    def speculate(self, tree: SuffixTree, seq: SeqState, budget: int, role: str) -> Draft:
        """One tree's own draft for ``seq`` (the local tree's match cache is keyed by 0)."""
        return tree.speculate(seq.context, budget, self.factor, self.offset, self.min_prob,
                              self.tree_spec, key=self.match_key(seq, role),
                              **({"alpha": self.alpha} if self.alpha else {}))


@dataclass
class NgramDrafter(Drafter):
    """vLLM's ``ngram`` method: the longest n-gram (``min_n``..``max_n``) ending the context
    that occurred earlier in the prompt or response is matched, and the tokens that followed
    its most recent earlier occurrence are proposed."""

    name: str = "ngram"
    min_n: int = 1
    max_n: int = 4

    def settings(self) -> dict[str, object]:
        return {"source": "own prompt + response", "min_n": self.min_n, "max_n": self.max_n}

    def draft(self, seq: SeqState, budget: int) -> Draft:
        ctx = seq.context
        total = len(ctx)
        for n in range(min(self.max_n, total - 1), self.min_n - 1, -1):
            tail = ctx[total - n :]
            for start in range(total - n - 1, -1, -1):
                if ctx[start : start + n] == tail:
                    tokens = ctx[start + n : start + n + budget]
                    k = len(tokens)
                    return Draft(tokens, list(range(-1, k - 1)), [1.0] * k, float(k), n)
        return Draft()
