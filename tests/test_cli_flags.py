"""Flags generated from the config dataclasses (cli/flags.py): one declaration per option, defaults in
the help, and only the flags the user gave reach the config."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest
import typer
from typer.testing import CliRunner

from digitlab.cli import main
from digitlab.cli.flags import given, with_config_flags
from digitlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig, flag_help, option


@dataclass
class ToyConfig:
    batch_size: int = option(128, "Batch size")
    tta: bool = option(True, "Test-time views", flag="--tta/--no-tta")
    data_dir: str | None = option(None, "Where the files are", default_text="the cache")
    internal: str = "kept out of the CLI"  # no help: not a flag


def _toy_app(seen: dict) -> typer.Typer:
    toy = typer.Typer(rich_markup_mode=None)

    @toy.command()
    @with_config_flags(ToyConfig)
    def run(quiet: bool = typer.Option(False, "--quiet", help="Say less."), **flags) -> None:
        seen.update(flags, quiet=quiet)

    @toy.command()
    def other() -> None:  # a second command, so `run` keeps its name
        pass

    return toy


def test_generated_flags_parse_and_report_what_was_given():
    seen: dict = {}
    toy = _toy_app(seen)
    res = CliRunner().invoke(toy, ["run", "--batch-size", "64", "--no-tta", "--quiet"])
    assert res.exit_code == 0, res.output
    assert seen == {"batch_size": 64, "tta": False, "data_dir": None, "quiet": True}
    assert given(seen, ToyConfig) == {"batch_size": 64, "tta": False}
    res = CliRunner().invoke(toy, ["run", "--internal", "x"])
    assert res.exit_code == 2  # a field without help is not a flag


def test_help_shows_each_default_pytorch_examples_style():
    res = CliRunner().invoke(_toy_app({}), ["run", "--help"])
    text = " ".join(res.output.split())
    assert "--batch-size INTEGER Batch size (default: 128)." in text
    assert "--tta / --no-tta Test-time views (default: on)." in text
    assert "Where the files are (default: the cache)." in text


def test_every_train_config_field_is_a_flag_with_its_default(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for cls in (DataConfig, ModelConfig, TrainConfig, RunConfig):
        for f in fields(cls):
            if "help" not in f.metadata:
                continue
            decl = (f.metadata.get("flag") or "--" + f.name.replace("_", "-")).split("/")[0]
            assert decl in text, decl
            assert flag_help(f) in text, flag_help(f)
            assert "(default: " in flag_help(f) or f.default is None, f.name


def test_a_clash_between_own_and_generated_flags_is_refused():
    with pytest.raises(TypeError, match="epochs"):

        @with_config_flags(TrainConfig)
        def bad(epochs: int = 1, **flags) -> None: ...


@pytest.mark.parametrize(
    "argv, want",
    [
        (["--preset", "seed000"], dict(optimizer="adadelta", epochs=14, batch_size=64, lr=1.0)),
        (["--preset", "seed000", "--epochs", "3"], dict(optimizer="adadelta", epochs=3, batch_size=64)),
        (["--dataset", "digits"], dict(epochs=10, batch_size=32, lr=TrainConfig().lr)),
        (["--batch-size", "7", "--no-tta"], dict(epochs=2, batch_size=7, tta=False)),
    ],
)
def test_a_preset_is_not_overridden_by_defaults(argv, want, monkeypatch, tmp_path):
    """Only the flags given change the preset's (or the dataset's) values; the run itself is not started."""
    seen = {}

    class Stop(Exception):
        pass

    def fake_train(cfg, **kw):
        seen["cfg"] = cfg
        raise Stop

    monkeypatch.setattr("digitlab.engine.train.train", fake_train)
    with pytest.raises(Stop):
        main(["train", *argv, "--runs-dir", str(tmp_path), "-q"])
    cfg: RunConfig = seen["cfg"]
    assert {k: getattr(cfg.train, k) for k in want} == want
    assert cfg.runs_dir == str(tmp_path) and cfg.model.model == ("cnn" if "seed000" in argv else "fast")
