"""The online draft policy: what runs inside every engine step besides the cache itself.

How many draft tokens each running sequence gets (``budget``), the engine's step cost that
the budget trades them against, fitted online (``cost_model``), and the calibration of the
drafts' probabilities against what verification accepted (``calibration``).

numpy only: nothing here imports torch, vLLM, the cache (``openrlhf_srt.cache``) or the
trace files (``openrlhf_srt.data``); the proposer hands in drafts, step times and
verification outcomes. The offline replay of recorded rollouts is ``openrlhf_srt.replay``.
"""
