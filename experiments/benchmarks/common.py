"""What every benchmark script shares: the device line it prints and its command-line entry point."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable

from datamodules.errors import MERError


def device_name(device: str) -> str:
    """'NVIDIA H200' for a CUDA device, else the CPU's name with its cores and torch's thread count."""
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(device)
    processor = platform.processor() or platform.machine()
    return f"{processor}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def run_benchmark(main: Callable[[], None]) -> None:
    """Run a benchmark's `main`; bad input (MERError) is one `error:` line and exit code 2."""
    try:
        main()
    except MERError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
