"""Two-sample statistics of sampled token ids: are two engines sampling one distribution?

Used by the exactness tests (tests/vllm/test_exactness.py) and by tools/gpu_check.py, which runs
the same comparison on a user's GPU.
"""

from __future__ import annotations

import numpy as np


def chi2_homogeneity(a: np.ndarray, b: np.ndarray) -> tuple[float, int, float]:
    """Chi-square test that two samples of token ids come from one distribution.

    Tokens seen fewer than 10 times in both samples together are pooled into one category
    (kept if it has 10), so every expected count is >= 5 with equal sample sizes.
    Returns (statistic, degrees of freedom, p-value)."""
    cats, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    table = np.zeros((2, len(cats)))
    np.add.at(table[0], inv[: len(a)], 1)
    np.add.at(table[1], inv[len(a):], 1)
    tot = table.sum(0)
    keep, rare = table[:, tot >= 10], table[:, tot < 10].sum(1, keepdims=True)
    table = np.concatenate([keep, rare], 1) if rare.sum() >= 10 else keep
    if table.shape[1] < 2:
        return 0.0, 0, 1.0
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    df = table.shape[1] - 1
    return stat, df, chi2_survival(stat, df)


def chi2_survival(stat: float, df: int) -> float:
    """P(X >= stat) for X ~ chi-square(df): the regularized upper incomplete gamma
    Q(df/2, stat/2)."""
    import torch

    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


def total_variation(a: np.ndarray, b: np.ndarray) -> float:
    cats, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    pa = np.bincount(inv[: len(a)], minlength=len(cats)) / len(a)
    pb = np.bincount(inv[len(a):], minlength=len(cats)) / len(b)
    return float(np.abs(pa - pb).sum() / 2)


def first_difference(a, b) -> int | None:
    """Index of the first differing token of two sequences (None: identical)."""
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return None if i == len(a) == len(b) else i


__all__ = ["chi2_homogeneity", "chi2_survival", "first_difference", "total_variation"]
