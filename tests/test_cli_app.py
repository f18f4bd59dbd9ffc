"""The `digitlab` application itself (cli/app.py, cli/__init__.py): help that reads as classic click
help, commands in workflow order, --version, error handling, and a start-up that needs no torch."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import click
import pytest
import typer.main

import digitlab
from digitlab.cli import app, main
from digitlab.cli.app import WORKFLOW
from digitlab.errors import DigitlabError


def _command_paths(group, prefix=()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        out.append(prefix + (name,))
        if hasattr(cmd, "commands"):
            out += _command_paths(cmd, prefix + (name,))
    return out


COMMANDS = _command_paths(typer.main.get_command(app))


def _help(capsys, *path: str) -> str:
    assert main([*path, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("path", [(), *COMMANDS], ids=lambda p: " ".join(p) or "digitlab")
def test_help_is_classic_click_help(path, capsys):
    """No type tags after flags (typer 0.29 printed `--list-presets <bool>`, which reads as taking a value)
    and no `{checkpoint}` or `<list[str]>` in usage lines; no box drawing that breaks in logs."""
    out = _help(capsys, *path)
    assert out.startswith("Usage: digitlab")
    for bad in ("<bool>", "<str>", "<int>", "<float>", "<list", "{", "╭", "│"):
        assert bad not in out, f"{bad!r} in `digitlab {' '.join(path)} --help`:\n{out}"


def test_every_option_has_help():
    """Every flag of every command says what it is for."""
    root = typer.main.get_command(app)
    missing = []
    for path in COMMANDS:
        cmd = root
        for name in path:
            cmd = cmd.commands[name]
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.help:
                missing.append(f"{' '.join(path)} {param.opts[0]}")
    assert not missing, missing


def test_commands_are_listed_in_workflow_order(capsys):
    out = _help(capsys)
    listed = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.startswith("  ")]
    workflow = ["data", "models", "train", "eval", "predict", "serve", "export", "bench", "experiment"]
    positions = [listed.index(n) for n in workflow]
    assert listed[0] == "data" and positions == sorted(positions), listed
    assert set(listed) - set(WORKFLOW) == set(listed[len(listed) - len(set(listed) - set(WORKFLOW)) :])  # new ones last


def test_version_is_the_package_metadata(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"digitlab {version('digitlab')}"
    assert digitlab.__version__ == version("digitlab")


def test_errors_are_one_line_and_exit_2(capsys, monkeypatch):
    import digitlab.cli.models as models_cli

    def boom(*a, **k):
        raise DigitlabError("unknown thing 'x'")

    monkeypatch.setattr("digitlab.models.list_models", boom)
    assert models_cli  # the command module imports list_models when it runs
    assert main(["models"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown thing 'x'"
    assert main(["train", "--list-presets", "true"]) == 2  # a flag takes no value
    assert "Got unexpected extra argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], ["train", "--help"], ["eval", "--help"], ["train", "--no-such-flag"]]
)
def test_start_up_does_not_import_torch(argv):
    """`digitlab --help`, `train --help` and usage errors answer without loading torch (the slow part of a
    cold start); a fresh interpreter, since this test process has torch loaded already."""
    code = (
        "import sys\nfrom digitlab.cli import main\n"
        f"rc = main({argv!r})\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().splitlines()[-1].startswith("NO-TORCH"), proc.stderr


@pytest.mark.parametrize("name", ["data", "models", "summary", "train", "eval", "predict", "serve", "export", "bench"])
def test_command_list_lines_are_whole_sentences(name, capsys):
    """Click cuts a long first sentence to "..." in the command list; each command's first line is short."""
    out = _help(capsys)
    line = next(line for line in out.splitlines() if line.split()[:1] == [name])
    assert not line.endswith("..."), line


def test_piped_output_is_not_wrapped_at_80_columns(capsys, monkeypatch):
    """In a pipe or a CI log each printed line stays one line (Rich wraps at 80 columns mid-phrase unless told the width)."""
    from digitlab.engine.presets import list_presets

    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["train", "--list-presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    long = {k: v for k, v in list_presets().items() if len(k) + len(v) > 90}
    assert long, "no preset description is long enough to test wrapping"
    for name, description in long.items():
        assert any(line.split()[:1] == [name] and line.rstrip().endswith(description) for line in lines), name


def test_piped_tables_get_the_width_they_need(monkeypatch):
    from digitlab.cli.output import Console, Table

    monkeypatch.delenv("COLUMNS", raising=False)
    table = Table("image", "result")
    table.add_row("a/long/path/" * 10 + "one.png", "7")
    console = Console(record=True)
    console.print(table)
    text = console.export_text()
    assert "a/long/path/" * 10 + "one.png" in text  # one row, not folded over several lines
    monkeypatch.setenv("COLUMNS", "50")  # the user's choice of width wins
    assert Console().width == 50
