"""ArcticInference's suffix trees (SuffixDecoding, behind vLLM's ``suffix`` method) as replay
drafters: the ``arctic-*`` strategies, the designs the project's cache is compared against.

They need arctic-inference (``make bench``, docs/replay.md); it is imported when such a
drafter is made, so the rest of the replay runs without it.

Every design keeps the sequence's own prompt and response in a **local** tree (as vLLM's
``suffix`` method does) and may add:

- a **per-prompt** tree per prompt key holding that prompt's responses, filled ``online``
  (own and sibling tokens as they are generated, kept across steps), from ``history`` only
  (finished responses of earlier steps, inserted when a step ends), or online within a
  ``window`` of the last W steps (older steps' responses removed);
- a **global** tree over all prompts' responses, filled online and kept across steps.

Each tree drafts with ArcticInference's own rules and the highest score wins, the earlier
tree (local, per-prompt, global) on ties: how vLLM's ``suffix`` method chooses between its
local and global trees.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from openrlhf_srt.replay.drafters import Drafter, DraftTree, RunAheadRollout, SeqState


def suffix_tree_class():
    """ArcticInference's native ``SuffixTree``, or RuntimeError saying how to install it."""
    try:
        from arctic_inference.suffix_decoding._C import SuffixTree
    except ImportError as e:
        raise RuntimeError(
            "the arctic-* strategies need arctic-inference; install it with `make bench` "
            f"(see docs/replay.md): {e}"
        ) from None
    return SuffixTree


@dataclass
class ArcticDrafter(Drafter):
    """Local tree plus optional per-prompt and global ArcticInference trees."""

    name: str
    prompt_mode: str | None = "online"  # None, "online", "history" or "window"
    use_global: bool = False
    window: int = 0  # for prompt_mode == "window": keep the responses of the last W steps
    max_depth: int = 24
    min_prob: float = 0.1
    factor: float = 1.0  # draft at most factor * match length (+ offset) tokens
    offset: float = 0.0
    tree_spec: bool = False  # draft a token tree instead of a single path

    def __post_init__(self) -> None:
        if self.prompt_mode not in (None, "online", "history", "window"):
            raise ValueError(f"unknown prompt_mode {self.prompt_mode!r}")
        if self.prompt_mode == "window" and self.window < 1:
            raise ValueError("prompt_mode 'window' needs window >= 1")
        self._tree_class = suffix_tree_class()
        self._prompt_trees: dict[int, object] = defaultdict(self._new_tree)
        self._global = self._new_tree() if self.use_global else None
        self._local: dict[int, object] = {}
        self._finished: list[SeqState] = []  # this step's finished sequences (history mode)
        self._by_step: dict[int, list[tuple[int, int]]] = defaultdict(list)  # (key, seq id)
        self._runahead_ids: list[tuple[int, int]] = []
        self._next_runahead_id = -1  # run-ahead sequences get negative ids

    def _new_tree(self):
        return self._tree_class(self.max_depth)

    def settings(self) -> dict[str, object]:
        out: dict[str, object] = {"trees": self.trees()}
        if self.prompt_mode == "window":
            out["window_steps"] = self.window
        out.update(max_depth=self.max_depth, min_prob=self.min_prob,
                   max_spec_factor=self.factor, tree_spec=self.tree_spec)
        if self.offset:
            out["max_spec_offset"] = self.offset
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
        if self.prompt_mode == "window":
            for old in [s for s in self._by_step if s <= step - 1 - self.window]:
                for key, sid in self._by_step.pop(old):
                    self._prompt_trees[key].remove(sid)
        if self.prompt_mode:
            for r in runahead:  # per-prompt trees hold responses only
                sid = self._next_runahead_id
                self._next_runahead_id -= 1
                self._prompt_trees[r.prompt_key].extend(sid, list(r.response))
                self._runahead_ids.append((r.prompt_key, sid))

    def start(self, seq: SeqState) -> None:
        local = self._new_tree()
        local.extend(0, list(seq.prompt))
        self._local[seq.seq_id] = local
        if self.prompt_mode in ("online", "window"):
            self._by_step[seq.step].append((seq.prompt_key, seq.seq_id))

    def extend(self, seq: SeqState, tokens: Sequence[int]) -> None:
        tokens = list(tokens)
        self._local[seq.seq_id].extend(0, tokens)
        if self.prompt_mode in ("online", "window"):
            self._prompt_trees[seq.prompt_key].extend(seq.seq_id, tokens)
        if self._global is not None:
            self._global.extend(seq.seq_id, tokens)

    def finish(self, seq: SeqState) -> None:
        del self._local[seq.seq_id]
        if self.prompt_mode == "history":
            self._finished.append(seq)

    def end_step(self, step: int) -> None:
        for seq in self._finished:
            self._prompt_trees[seq.prompt_key].extend(seq.seq_id, list(seq.response))
        self._finished = []
        for key, sid in self._runahead_ids:  # run-ahead rollouts are dropped after their step
            self._prompt_trees[key].remove(sid)
        self._runahead_ids = []

    # --------------------------------------------------------------------------- drafting
    def draft(self, seq: SeqState, budget: int) -> DraftTree:
        trees = [self._local[seq.seq_id]]
        if self.prompt_mode:
            trees.append(self._prompt_trees[seq.prompt_key])
        if self._global is not None:
            trees.append(self._global)
        # vLLM hands ArcticInference at most the last max_depth context tokens
        ctx = seq.context[-self.max_depth :]
        chosen = None
        for tree in trees:
            d = tree.speculate(ctx, budget, self.factor, self.offset, self.min_prob,
                               self.tree_spec)
            if chosen is None or d.score > chosen.score:
                chosen = d
        return DraftTree(list(chosen.token_ids), list(chosen.parents), list(chosen.probs),
                         chosen.score, chosen.match_len)
