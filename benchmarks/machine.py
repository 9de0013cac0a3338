"""What a benchmark ran on: CPU model, cores and threads, accelerator, library versions."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or platform.machine()


def describe_machine(device: torch.device) -> dict[str, str]:
    info = {
        "cpu": cpu_model(),
        "logical cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    load = Path("/proc/loadavg")
    if load.exists():
        info["load average (1/5/15 min)"] = " ".join(load.read_text().split()[:3])
    return info


def peak_rss_tracking() -> bool:
    """Whether the resident-memory high-water mark can be reset (Linux ``clear_refs``)."""
    return Path("/proc/self/clear_refs").exists()


def reset_peak_rss() -> int:
    """Reset the resident high-water mark; returns the current resident bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def peak_rss() -> int:
    return _status_bytes("VmHWM")


def _status_bytes(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0
