"""The command line explains itself (issue 12, items 3-4): every option of every ``fimkit`` command
has help, the experiment commands show each default and closed sets show their choices;
``--version``; ``fimkit bench`` refuses an unknown optimizer name."""

import argparse
from importlib import metadata

import pytest

from benchmarks.cli import bench_command
from fimkit.cli import _load, available_commands, main

#: the commands whose every option also shows its default (the experiment layer's)
WITH_DEFAULTS = ("train", "compare", "demo", "data", "bench")


class Captured(BaseException):
    """Raised in place of parsing, carrying the parser (a BaseException: no command swallows it)."""

    def __init__(self, parser):
        self.parser = parser


def parser_of(command: str, monkeypatch) -> argparse.ArgumentParser:
    """The argparse parser a ``fimkit`` command builds, taken when it parses."""
    def capture(parser, args=None, namespace=None):
        raise Captured(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    try:
        _load(available_commands()[command])([])
    except Captured as captured:
        return captured.parser
    finally:
        monkeypatch.undo()
    raise AssertionError(f"fimkit {command} parsed no arguments with argparse")


def options(parser):
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("command", sorted(available_commands()))
def test_every_option_of_every_command_has_help(command, monkeypatch):
    parser = parser_of(command, monkeypatch)
    missing = [a.option_strings or a.dest for a in options(parser) if not (a.help or "").strip()]
    assert not missing, f"fimkit {command}: no help for {missing}"


@pytest.mark.parametrize("command", WITH_DEFAULTS)
def test_every_option_of_an_experiment_command_shows_its_default(command, monkeypatch):
    parser = parser_of(command, monkeypatch)
    formatter = parser._get_formatter()
    silent = [a.option_strings for a in options(parser) if a.option_strings and a.dest != "version"
              and "(default" not in formatter._expand_help(a)]
    assert not silent, f"fimkit {command}: no default shown for {silent}"


def test_closed_sets_show_their_choices_in_train_help(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--dtype {auto,fp32,bf16}" in text and "--lm-head {paper,adam,matrix}" in text
    assert "--preset {60M,130M,350M,1.3B,nano,tiny,small,micro}" in text


def test_train_help_groups_flags_by_config_section(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert all(f"[{section}]:" in text for section in ("run", "data", "optimizer", "schedule", "eval", "logging"))


def test_fimkit_version_prints_the_package_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fimkit {metadata.version('fimkit')}"


def test_a_command_has_version_too(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"fimkit {metadata.version('fimkit')}"


def test_bench_refuses_an_unknown_optimizer_suggesting_the_closest(capsys):
    assert bench_command(["--optimizers", "racs,alic"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'alic' is not a registered optimizer (did you mean 'alice'?)" in err, err
    assert "valid: adafactor, adam" in err


def test_bench_refuses_a_list_of_no_names(capsys):
    assert bench_command(["--optimizers", ","]) == 2
    assert "names no optimizer" in capsys.readouterr().err


def test_bench_all_is_every_registered_optimizer():
    from benchmarks.cli import optimizer_names
    from fimkit.optim import registered

    assert optimizer_names("all") == sorted(registered()) and optimizer_names("RACS, alice") == ["racs", "alice"]
