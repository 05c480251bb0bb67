"""python -m openrlhf_srt.cli.train_local: on-policy GRPO/DAPO on CPU with SRT rollouts.

    python -m openrlhf_srt.cli.train_local --run_dir runs/grpo_srt --algo grpo --steps 5
    python -m openrlhf_srt.cli.train_local --run_dir runs/grpo_base --srt false

Every flag is a field of openrlhf_srt.local.train_config.TrainConfig (see --help). A resume
that would change the prompt order, or a checkpoint that cannot be written, ends the run
with a one-line message and exit status 1 (docs/reliability.md).
"""

from __future__ import annotations

import sys

from openrlhf_srt.vllm.engine import quiet_vllm_logs


def main(argv: list[str] | None = None) -> int:
    quiet_vllm_logs()
    from openrlhf_srt.local.train_config import parse_config
    from openrlhf_srt.local.trainer import CheckpointError, LocalTrainer, ResumeError

    cfg = parse_config(argv)
    try:
        trainer = LocalTrainer(cfg)
        try:
            trainer.run()
        finally:
            trainer.close()
    except (CheckpointError, ResumeError) as e:
        print(f"train_local: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
