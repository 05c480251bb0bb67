"""Dataloader look-ahead window: see upcoming prompts without consuming them.

    la = LookaheadPrompts(dataloader_iter, unpack=lambda item: list(zip(item[1], item[2])))
    la.peek(8)          # up to 8 upcoming prompt records; nothing consumed
    item = next(la)     # the next training item (same as la.next_batch())
    state = la.state_dict()

Items are whatever the source yields (OpenRLHF's prompt dataloader yields one
`(datasources, prompts, labels, images)` batch per item); `unpack(item)` turns an item into
its prompt records (default: the item itself is one record). Peeking pulls items from the
source into a buffer; `next` serves the buffer first, so the training order is exactly the
source's order, whatever was peeked.

Resume without losing or repeating a prompt, in one of two ways:

- the source restores its own position (a stateful dataloader whose state was saved at the
  same moment: it then stands after the peeked items): `load_state_dict(state,
  source_restored=True)` puts the peeked-but-unconsumed items back in front of it;
- the source is re-created from the start in the same order (a seeded sampler):
  `load_state_dict(state)` skips the `consumed` items and drops the buffer.

`state_dict()` holds the buffered items themselves, so they must be picklable (prompt text
and labels are).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class LookaheadPrompts:
    def __init__(self, source: Iterable, unpack: Callable[[Any], list] | None = None):
        self._it: Iterator = iter(source)
        self._unpack = unpack or (lambda item: [item])
        self._buf: deque = deque()
        self._done = False
        self.consumed = 0  # items handed out by next()

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> LookaheadPrompts:
        return self

    def __next__(self):
        if self._buf:
            item = self._buf.popleft()
        else:
            item = self._pull()
            if item is _END:
                raise StopIteration
        self.consumed += 1
        return item

    def next_batch(self):
        """The next training item (raises StopIteration at the end)."""
        return next(self)

    def _pull(self):
        if self._done:
            return _END
        try:
            return next(self._it)
        except StopIteration:
            self._done = True
            return _END

    # ------------------------------------------------------------------ look-ahead
    def peek(self, k: int) -> list:
        """Up to k upcoming prompt records, in training order, without consuming them."""
        if k <= 0:
            return []
        out: list = []
        for item in self._buf:
            out.extend(self._unpack(item))
            if len(out) >= k:
                return out[:k]
        while len(out) < k:
            item = self._pull()
            if item is _END:
                break
            self._buf.append(item)
            out.extend(self._unpack(item))
        return out[:k]

    @property
    def buffered(self) -> int:
        """Items pulled from the source but not yet consumed."""
        return len(self._buf)

    @property
    def exhausted(self) -> bool:
        """True when nothing is left (checks the source, buffering one item if needed)."""
        if self._buf:
            return False
        item = self._pull()
        if item is _END:
            return True
        self._buf.append(item)
        return False

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        return {"consumed": self.consumed, "pulled": self.consumed + len(self._buf),
                "buffer": list(self._buf)}

    def load_state_dict(self, state: dict, *, source_restored: bool = False) -> None:
        """Restore on a fresh LookaheadPrompts (see the module docstring for the two ways)."""
        if self.consumed or self._buf:
            raise RuntimeError("load_state_dict needs a LookaheadPrompts nothing was read from")
        if source_restored:
            self._buf = deque(state["buffer"])
        else:
            for _ in range(int(state["consumed"])):
                if self._pull() is _END:
                    raise ValueError("the source has fewer items than the state consumed")
        self.consumed = int(state["consumed"])


_END = object()
