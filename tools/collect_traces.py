"""Generate rollout traces with the embedded model (or any model) through vLLM.

Thin wrapper: the implementation is openrlhf_srt.cli.collect_traces (see --help)."""

import sys

from openrlhf_srt.cli.collect_traces import main

if __name__ == "__main__":
    sys.exit(main())
