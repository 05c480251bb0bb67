"""Per-prompt rollout tree cache: native core, typed Python API, snapshots."""
