"""FixedDrafts, the bench-only draft source: exactly k tokens per row, capped by the row's
budget."""

import numpy as np
import pytest

from openrlhf_srt.vllm.fixed_drafts import FixedDrafts


def test_every_row_drafts_k_tokens_within_its_budget():
    src = FixedDrafts(None, max_draft_tokens=4)
    ids = np.arange(3)
    out = src.step(ids, np.zeros(3, np.int32), np.ones(3, np.int32), np.array([4, 4, 1]))
    assert np.diff(out.offsets).tolist() == [0, 0, 0]  # k = 0: every draft empty
    src.set_draft_tokens(3)
    out = src.step(ids, np.zeros(3, np.int32), np.ones(3, np.int32), np.array([4, 0, 1]))
    assert np.diff(out.offsets).tolist() == [3, 0, 1]
    assert out.tokens.size == out.probs.size == 4 and np.all(out.probs == 1.0)
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        src.set_draft_tokens(5)
