"""Where a result came from: the code revision and the command, written beside every output."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def code_revision() -> str:
    """``git describe --always --dirty`` of the checkout this code runs from ("unknown" outside git)."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=10"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def command_line() -> str:
    """The command that is running, as a user would type it."""
    program = Path(sys.argv[0]).name if sys.argv else "python"
    return " ".join([program] + [shlex.quote(a) for a in sys.argv[1:]])
