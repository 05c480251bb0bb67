"""openrlhf-srt: speculative rollouts with a per-prompt tree cache for on-policy RL."""

__version__ = "0.1.0"
