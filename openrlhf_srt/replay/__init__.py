"""The replay laboratory: recorded rollouts replayed through model-free drafters, offline.

It replays trace files (``openrlhf_srt.data.traces``) training step by training step,
verifies each draft against the recorded response and reports tokens per verification
step, to compare cache designs and drafting rules (docs/replay.md; ``tools/replay.py`` is
its command line).

What it may import: ``openrlhf_srt.data`` (traces), ``openrlhf_srt.cache`` (the native
cache it replays), ``openrlhf_srt.drafting`` (the budget rules it simulates), numpy and
tqdm; ArcticInference only where installed. Never torch or vLLM. Nothing that runs in an
engine imports this package.
"""
