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
    argv = list(sys.argv) or ["python"]
    path = Path(argv[0])
    if path.name == "fimkit" or (path.name == "cli.py" and path.parent.name == "fimkit"):
        program = "fimkit"  # the console script, or `python -m fimkit.cli`
    elif argv[0] == "-c":
        program = "python -c ..."
    else:
        program = path.name
    return " ".join([program] + [shlex.quote(a) for a in argv[1:]])
