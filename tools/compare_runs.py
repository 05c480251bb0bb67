"""Compare training runs (table 1 layout of the SRT paper, plus a PNG).

Thin wrapper: the implementation is openrlhf_srt.cli.compare_runs (see --help)."""

import sys

from openrlhf_srt.cli.compare_runs import main

if __name__ == "__main__":
    sys.exit(main())
