"""The names of the SRT worker RPCs, defined once.

`worker_extension.SRTWorkerExtension` (with `CPUFixExtension`) is the only server: each
name is one of its methods, which vLLM runs in every worker through `collective_rpc`.
`engine_client` is the only caller. This module imports nothing, so the client can name the
RPCs without importing the extension (whose import installs the CPU kernel fix).
"""

from __future__ import annotations

from enum import StrEnum


class SRTRpc(StrEnum):
    BIND = "srt_bind"  # every worker answers
    CPU_FIX = "srt_cpu_fix"  # every worker answers
    # answered by the cache owner only, None elsewhere
    STATS = "srt_stats"
    SAVE_SNAPSHOT = "srt_save_snapshot"
    LOAD_SNAPSHOT = "srt_load_snapshot"
    CLEAR = "srt_clear"
    RESIZE = "srt_resize"
    SET_STEP = "srt_set_step"
    KEEP_WINDOW = "srt_keep_window"
