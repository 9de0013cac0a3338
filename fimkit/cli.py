"""The ``fimkit`` command line.

Each sub-command is a function ``command(argv: list[str]) -> int`` that parses its own
arguments. Library commands are listed in ``BUILTIN_COMMANDS``; commands that live outside the
library (training and the demo in ``experiments/``, ``derive`` in ``derivations/``, ``bench`` in
``benchmarks/``) are discovered through the ``fimkit.commands`` entry-point group, so ``fimkit``
never imports those packages itself.
"""

from __future__ import annotations

import importlib
import sys
from importlib import metadata

BUILTIN_COMMANDS = {
    "optimizers": "fimkit.catalog:optimizers_command",
}


def _plugin_commands() -> dict[str, str]:
    try:
        entries = metadata.entry_points(group="fimkit.commands")
    except TypeError:  # pragma: no cover - Python < 3.10 API
        entries = metadata.entry_points().get("fimkit.commands", [])
    return {e.name: e.value for e in entries}


def available_commands() -> dict[str, str]:
    commands = dict(BUILTIN_COMMANDS)
    commands.update(_plugin_commands())
    return dict(sorted(commands.items()))


def _load(target: str):
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def version() -> str:
    """The installed package's version (its metadata), or the source tree's when not installed."""
    try:
        return metadata.version("fimkit")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout on sys.path only
        from fimkit import __version__

        return __version__


def _usage(commands: dict[str, str]) -> str:
    lines = ["usage: fimkit COMMAND [options]", "       fimkit --version", "", "commands:"]
    for name, target in commands.items():
        try:
            doc = (_load(target).__doc__ or "").strip().splitlines()
            summary = doc[0] if doc else ""
        except (ImportError, AttributeError) as exc:
            summary = f"(unavailable: {exc})"
        lines.append(f"  {name:<10} {summary}")
    lines.append("")
    lines.append("Run `fimkit COMMAND --help` for a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = available_commands()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage(commands))
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"fimkit {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"fimkit: unknown command {name!r}.\n\n{_usage(commands)}", file=sys.stderr)
        return 2
    return int(_load(commands[name])(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
