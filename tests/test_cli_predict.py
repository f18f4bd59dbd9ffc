"""`digitlab predict` end to end: generated photo-like digits, folders, globs, JSON, errors, exit codes."""

from __future__ import annotations

import json

import pytest
from PIL import Image, ImageDraw

from digitlab.cli import main
from digitlab.cli.predict import expand_inputs
from digitlab.data import synth


def seven(path):
    img = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(img).line([(60, 40), (140, 40), (90, 170)], fill=0, width=12)
    img.save(path)
    return path


@pytest.fixture(scope="module")
def photos(mnist_test, tmp_path_factory):
    return synth.generate(tmp_path_factory.mktemp("synth"), *mnist_test, kind="photo", count=200, seed=7)


def _read_all(manifest, capsys) -> float:
    """`digitlab predict FOLDER --json` with the shipped model; the fraction read exactly right."""
    rows = synth.read_manifest(manifest)
    assert main(["predict", str(manifest.parent), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    got = {r["source"]: r["text"] for r in out}
    assert len(out) == len(rows)
    return sum(got[str(f)] == label for f, label in rows) / len(rows)


def test_predict_reads_generated_photos(photos, capsys):
    assert _read_all(photos, capsys) >= 0.97


@pytest.mark.parametrize("kind,count,least", [("canvas", 200, 0.96), ("number", 100, 0.93)])
def test_predict_reads_generated_drawings_and_numbers(kind, count, least, mnist_test, tmp_path, capsys):
    """Canvas drawings (thin to marker strokes, RGBA) and written numbers, never seen in training."""
    assert _read_all(synth.generate(tmp_path, *mnist_test, kind=kind, count=count, seed=7), capsys) >= least


def test_table_output_and_top_k(tmp_path, capsys):
    assert main(["predict", str(seven(tmp_path / "seven.png")), "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "seven.png" in out and "7" in out


def test_errors_are_per_file_and_set_exit_code(tmp_path, capsys):
    good = seven(tmp_path / "good.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("hello")
    code = main(
        [
            "predict",
            str(good),
            str(tmp_path / "empty.png"),
            str(tmp_path / "missing.png"),
            str(tmp_path / "notes.jpg"),
            "--json",
        ]
    )
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert code == 1
    assert [r["status"] for r in results][0] in ("ok", "uncertain")
    assert [r["status"] for r in results][1:] == ["error", "error", "error"]
    assert results[0]["text"] == "7"
    assert "empty" in captured.err and "no such file" in captured.err


def test_blank_image_is_not_an_error(tmp_path, capsys):
    Image.new("L", (100, 100), 255).save(tmp_path / "blank.png")
    assert main(["predict", str(tmp_path / "blank.png")]) == 0
    assert "no digit found" in capsys.readouterr().out


def test_globs_and_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    seven(tmp_path / "a.png")
    seven(tmp_path / "sub" / "b.png")
    (tmp_path / "sub" / "readme.txt").write_text("x")
    assert expand_inputs([str(tmp_path)]) == [str(tmp_path / "a.png"), str(tmp_path / "sub" / "b.png")]
    assert expand_inputs([str(tmp_path / "*.png")]) == [str(tmp_path / "a.png")]
    assert expand_inputs([str(tmp_path / "*.gif")]) == [str(tmp_path / "*.gif")]  # kept: reported missing


def test_single_and_explain(tmp_path):
    img = Image.new("L", (400, 200), 255)
    d = ImageDraw.Draw(img)
    d.line([(60, 40), (140, 40), (90, 170)], fill=0, width=12)
    d.line([(260, 40), (260, 170)], fill=0, width=12)
    img.save(tmp_path / "row.png")
    out = tmp_path / "explain.png"
    assert main(["predict", str(tmp_path / "row.png"), "--explain", str(out)]) == 0
    assert out.is_file() and Image.open(out).size[0] > 300
    # the saliency row: --explain runs the shipped model's PyTorch checkpoint (gradients), not its ONNX twin
    assert Image.open(out).size[1] > 520
    assert main(["predict", str(tmp_path / "row.png"), "--single", "--json"]) == 0


def test_missing_model_is_a_clear_error(tmp_path):
    assert main(["predict", str(seven(tmp_path / "s.png")), "--model", str(tmp_path / "nope.pt")]) == 2


def test_percent_never_rounds_a_probability_up_to_certainty():
    from digitlab.cli.predict import percent

    assert [percent(p) for p in (0.9999, 0.9995, 0.9994, 0.5, 0.0006, 0.0001)] == [
        ">99.9%",
        ">99.9%",
        "99.9%",
        "50.0%",
        "0.1%",
        "<0.1%",
    ]


def test_a_file_named_twice_is_read_once(tmp_path):
    """A folder and a glob (or two spellings of a path) that match the same file read it once."""
    (tmp_path / "sub").mkdir()
    for name in ("a.png", "sub/b.png"):
        seven(tmp_path / name)
    got = expand_inputs([str(tmp_path), str(tmp_path / "*.png"), str(tmp_path / "sub" / ".." / "a.png")])
    assert got == [str(tmp_path / "a.png"), str(tmp_path / "sub" / "b.png")]


@pytest.mark.parametrize("task, header", [("digits", "top-k / per digit"), ("images", "top-k")])
def test_table_header_fits_the_task(task, header):
    """A CIFAR-10 model gives one class per image: its table does not say "per digit"."""
    from digitlab.cli.output import Console
    from digitlab.cli.predict import print_table

    console = Console(record=True, width=200)
    print_table([], console, {"name": "m", "task": task})
    text = console.export_text()
    assert header in text and ("per digit" in text) == (task == "digits")
