"""Every fenced code block of the README runs as written (the README is a contract with users).

Each block is accounted for by its language tag:

- ``python``: executed. The Python blocks under one ``##`` heading are one example, run in order
  in one namespace. A block whose first lines say ``# requires: pkg, ...`` is skipped when one
  of those modules cannot be imported, and ``# slow: why`` marks its example slow (excluded from
  ``make test``, run by ``make test-all``).
- ``bash`` / ``sh`` / ``shell`` / ``console``: every command is checked without being run:
  ``make TARGET`` needs the target in the Makefile; ``fimkit COMMAND ARGS`` needs the command to
  exist and its argument parser to accept ARGS (the parser runs for real and the command is
  stopped as soon as it has parsed them). Any other command fails the test until it is handled.
- ``toml``: parsed with ``tomllib``.
- any other tag, or none: the test fails and lists the block.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import pathlib
import re
import shlex
import sys
import tomllib
import types
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PYTHON, SHELL, TOML = ("python", "py"), ("bash", "sh", "shell", "console"), ("toml",)
FENCE = re.compile(r"^ {0,3}(```+|~~~+)\s*([^\s`]*)")


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # of the first line of code, 1-based
    section: str  # the ``##`` heading it is under

    def marker(self, name: str) -> str | None:
        """The value of a leading ``# name: value`` comment line."""
        for text in self.code.splitlines():
            match = re.match(rf"#\s*{name}:\s*(.*)", text.strip())
            if match:
                return match.group(1).strip()
            if text.strip() and not text.lstrip().startswith("#"):
                return None
        return None


def readme_blocks(text: str | None = None) -> list[Block]:
    """The fenced blocks of the README, in order (CommonMark fences: ``` or ~~~, up to 3 spaces)."""
    lines = (README.read_text() if text is None else text).splitlines()
    blocks, section, i = [], "", 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i][3:].strip()
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, lang = opening.group(1), opening.group(2).lower()
        start, i = i + 1, i + 1
        while i < len(lines) and not (lines[i].strip().startswith(fence[0] * len(fence))
                                      and not lines[i].strip().strip(fence[0])):
            i += 1
        blocks.append(Block(lang, "\n".join(lines[start:i]) + "\n", start + 1, section))
        i += 1
    return blocks


BLOCKS = readme_blocks()


# -- Python: one example per section ------------------------------------------------------------

def python_examples() -> dict[str, list[Block]]:
    examples: dict[str, list[Block]] = {}
    for block in BLOCKS:
        if block.lang in PYTHON:
            examples.setdefault(block.section, []).append(block)
    return examples


def _example_param(section: str, blocks: list[Block]):
    slow = any(b.marker("slow") for b in blocks)
    return pytest.param(section, id=section, marks=[pytest.mark.slow] if slow else [])


_RESULTS: dict[str, tuple[dict, str]] = {}


def run_example(section: str) -> tuple[dict, str]:
    """Namespace and printed output of the section's example (run once per session: examples
    register optimizers, and the checks below inspect the same run)."""
    if section not in _RESULTS:
        blocks = python_examples()[section]
        missing = sorted({name for b in blocks for name in re.split(r"[,\s]+", b.marker("requires") or "")
                          if name and importlib.util.find_spec(name) is None})
        if missing:
            pytest.skip(f"the example needs {', '.join(missing)}")
        module = types.ModuleType(f"readme_example_{len(_RESULTS)}")  # dataclasses look their module up
        sys.modules[module.__name__] = module
        namespace = module.__dict__
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            for block in blocks:  # padded so that a traceback gives the README's own line numbers
                exec(compile("\n" * (block.line - 1) + block.code, str(README), "exec"), namespace)
        _RESULTS[section] = namespace, out.getvalue()
    return _RESULTS[section]


@pytest.mark.parametrize("section", [_example_param(s, b) for s, b in python_examples().items()])
def test_readme_python_example_runs_as_written(section):
    run_example(section)


def _section_with(snippet: str) -> str:
    (section,) = {b.section for b in BLOCKS if b.lang in PYTHON and snippet in b.code}
    return section


def test_readme_worked_example_trains_and_prints_its_losses():
    namespace, out = run_example(_section_with("TiedColumns"))
    losses = [float(x) for x in re.findall(r"loss (\d+\.\d+)", out)]
    assert out.startswith("generic") and losses[-1] < 0.6 * losses[0]


def test_readme_three_calls_racs_is_fimkit_optim_racs():
    namespace, _ = run_example(_section_with("fimkit.solve(RowColumn(), grads)"))
    import torch

    import fimkit

    assert namespace["approx"].solver == "fixed point"
    assert isinstance(namespace["optimizer"], torch.optim.Optimizer)
    racs, registered = namespace["RACS"], fimkit.optim.RACS
    assert racs.default_hyperparameters() == registered.default_hyperparameters()
    for shape in ((4, 8), (8, 4)):
        params = [torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64)) for _ in range(2)]
        optimizers = racs([params[0]]), registered([params[1]])
        gen = torch.Generator().manual_seed(0)
        for _ in range(6):
            grad = torch.randn(shape, generator=gen, dtype=torch.float64) * (1 + torch.rand((), generator=gen))
            for param, optimizer in zip(params, optimizers):
                param.grad = grad.clone()
                optimizer.step()
        assert torch.equal(params[0], params[1])
        assert all(torch.equal(optimizers[0].state[params[0]][k], optimizers[1].state[params[1]][k])
                   for k in ("q", "s", "phi"))


# -- Shell: every command is checked, none is run -----------------------------------------------

def shell_commands(block: Block) -> list[tuple[int, list[str]]]:
    """(README line, words) of each command of a shell block: comments dropped, ``\\``
    continuations joined, ``&&`` / ``||`` / ``;`` / ``|`` separating commands, a ``$ `` prompt
    stripped."""
    commands, pending, first = [], "", None
    for offset, text in enumerate(block.code.splitlines()):
        if first is None:
            first = block.line + offset
        pending += text[:-1] + " " if text.endswith("\\") else text
        if text.endswith("\\"):
            continue
        lexer = shlex.shlex(pending.removeprefix("$ "), posix=True, punctuation_chars=";&|")
        lexer.whitespace_split, lexer.commenters = True, "#"
        words: list[str] = []
        for word in list(lexer) + [";"]:
            if word in (";", "&&", "||", "|", "&"):
                if words:
                    commands.append((first, words))
                words = []
            else:
                words.append(word)
        pending, first = "", None
    return commands


def shell_params():
    return [pytest.param(words, id=f"README.md:{line} {' '.join(words)}")
            for block in BLOCKS if block.lang in SHELL for line, words in shell_commands(block)]


class ParsedArguments(BaseException):
    """Raised in place of running a command once its parser has accepted the arguments
    (a BaseException, so that no ``except Exception`` of the command swallows it)."""


def check_fimkit_arguments(argv: list[str], monkeypatch) -> None:
    from fimkit.cli import available_commands, main

    assert argv, "`fimkit` without a command"
    assert argv[0] in available_commands(), f"`fimkit {argv[0]}` is not a command; there are {sorted(available_commands())}"
    parse_args, rejected = argparse.ArgumentParser.parse_args, []

    def parse_then_stop(parser, args=None, namespace=None):
        try:
            parsed = parse_args(parser, args, namespace)
        except SystemExit as exc:  # argparse's error (2) or --help (0); some commands catch it
            if exc.code:
                rejected.append(exc.code)
            raise
        raise ParsedArguments(parsed)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    err = io.StringIO()
    code = None
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except ParsedArguments:
        return
    except SystemExit:
        pass
    assert not rejected, f"`fimkit {shlex.join(argv)}` is rejected: {err.getvalue().strip()}"
    if code is not None:
        pytest.fail(f"`fimkit {argv[0]}` returned {code} without parsing its arguments with argparse: "
                    f"{err.getvalue().strip()}")


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, flags=re.M)}


@pytest.mark.parametrize("words", shell_params())
def test_readme_shell_command_is_accepted(words, monkeypatch):
    program, args = words[0], words[1:]
    if program == "make":
        unknown = [t for t in args if not t.startswith("-") and "=" not in t and t not in makefile_targets()]
        assert not unknown, f"`make {' '.join(unknown)}`: no such target in the Makefile"
    elif program == "fimkit":
        check_fimkit_arguments(args, monkeypatch)
    else:
        pytest.fail(f"README shell command `{shlex.join(words)}` is not checked by this test; "
                    f"add a handler for {program!r}")


# -- TOML and the rest --------------------------------------------------------------------------

@pytest.mark.parametrize("block", [pytest.param(b, id=f"README.md:{b.line}") for b in BLOCKS if b.lang in TOML])
def test_readme_toml_block_parses(block):
    tomllib.loads(block.code)


def test_every_readme_block_has_a_known_language():
    known = PYTHON + SHELL + TOML
    unhandled = [f"README.md:{b.line} ({b.lang or 'no language'})" for b in BLOCKS if b.lang not in known]
    assert not unhandled, "README blocks this test does not check: " + ", ".join(unhandled)


def test_readme_has_the_blocks_it_is_known_to_have():
    # A parser that found nothing would pass every test above; today's README has at least these.
    assert sum(b.lang in PYTHON for b in BLOCKS) >= 4 and sum(b.lang in SHELL for b in BLOCKS) >= 3


# -- the checker itself -------------------------------------------------------------------------

def test_block_parser_finds_language_line_and_section():
    text = "# t\n## One\n\n```python\nx = 1\n```\n\n## Two\n~~~\nplain\n~~~\n"
    assert readme_blocks(text) == [Block("python", "x = 1\n", 5, "One"), Block("", "plain\n", 10, "Two")]


def test_shell_commands_split_on_operators_and_drop_comments():
    block = Block("bash", "make demo   # builds it\nfimkit train \\\n  --steps 3 && make test\n", 10, "s")
    assert shell_commands(block) == [(10, ["make", "demo"]), (11, ["fimkit", "train", "--steps", "3"]),
                                     (11, ["make", "test"])]


def test_requires_marker_is_read_from_the_leading_comments():
    assert Block("python", "# requires: transformers\nimport transformers\n", 1, "s").marker("requires") == "transformers"
    assert Block("python", "import x\n# requires: y\n", 1, "s").marker("requires") is None


def test_misspelt_fimkit_option_is_rejected(monkeypatch):
    with pytest.raises(AssertionError, match="rejected"):
        check_fimkit_arguments(["reproduce", "--presett", "nano"], monkeypatch)


def test_bad_fimkit_option_is_rejected_by_a_command_that_catches_argparse_exits(monkeypatch):
    with pytest.raises(AssertionError, match="rejected"):
        check_fimkit_arguments(["diagnose", "--steps", "many"], monkeypatch)


def test_unknown_fimkit_command_is_rejected(monkeypatch):
    with pytest.raises(AssertionError, match="not a command"):
        check_fimkit_arguments(["reproduec"], monkeypatch)
