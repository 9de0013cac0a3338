"""The fimkit command line dispatches to library commands and entry-point plugins."""

from fimkit.cli import available_commands, main


def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "optimizers" in out and "train" in out and "derive" in out


def test_unknown_command_exits_2_with_usage(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_plugin_commands_come_from_entry_points():
    commands = available_commands()
    assert commands["train"] == "experiments.cli:train_command"
    assert commands["derive"] == "derivations.cli:derive_command"


def test_optimizers_command_lists_registered_optimizers_with_their_structure(capsys):
    assert main(["optimizers"]) == 0
    out = capsys.readouterr().out
    assert "adam" in out and "Diagonal()" in out and "shampoo" in out
