"""Evaluation the way predict reads (evaluate/reading.py) and `digitlab eval`'s predict path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from digitlab.cli import main
from digitlab.errors import DigitlabError
from digitlab.evaluate import reading as R
from digitlab.inference.predictor import Predictor, default_model_path


@pytest.fixture(scope="module")
def shipped() -> Predictor:
    return Predictor.load()


def bold_digits(side: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1, a 7 and a 0 drawn white on black with thick strokes that run close to the frame."""
    out = []
    s = side / 32
    for label in (1, 7, 0):
        img = Image.new("L", (side, side), 0)
        d = ImageDraw.Draw(img)
        w = max(2, round(4 * s))
        if label == 1:
            d.line([(16 * s, 2 * s), (16 * s, 30 * s)], fill=255, width=w)
        elif label == 7:
            d.line([(6 * s, 3 * s), (26 * s, 3 * s), (13 * s, 30 * s)], fill=255, width=w)
        else:
            d.ellipse([6 * s, 2 * s, 26 * s, 30 * s], outline=255, width=w)
        out.append(np.asarray(img))
    return torch.from_numpy(np.stack(out))[:, None], torch.tensor([1, 7, 0])


def test_present_raw_is_the_image_and_paper_is_dark_on_white_with_a_margin():
    x, _ = bold_digits(16)
    a = x[2, 0].numpy()
    assert np.array_equal(np.asarray(R.present(a, "raw")), a)
    paper = np.asarray(R.present(a, "paper"))
    m = round(R.PAPER_MARGIN * 16 * R.PAPER_SCALE)
    assert paper.shape == (16 * R.PAPER_SCALE + 2 * m,) * 2
    assert paper[:m].min() == 255 and paper[:, :m].min() == 255  # white margin
    assert paper.min() < 60  # dark ink
    with pytest.raises(ValueError, match="presentation"):
        R.present(a, "sideways")


@pytest.mark.parametrize("presentation", R.PRESENTATIONS)
def test_read_images_reads_each_drawn_digit(shipped, presentation):
    x, y = bold_digits(16)
    r = R.read_images(shipped, x, presentation)
    assert r.probs.shape == (3, 11) and r.n_empty == 0 and r.n_split == 0
    assert r.probs[:, :10].argmax(1).tolist() == y.tolist()
    assert r.inputs.shape == (3, 1, 28, 28) and int(r.inputs.max()) == 255  # what the model saw


def test_eval_report_with_a_question_column_averages_over_digits(shipped, tmp_path):
    x, y = bold_digits(16)
    x = torch.cat([x, torch.zeros(1, 1, 16, 16, dtype=torch.uint8)])  # a blank: read as no digit
    source = R.ReadSource("drawn", torch.cat([y, torch.tensor([7])]), images=x)
    metrics = R.evaluate_as_read(shipped, source, "raw", tmp_path, {"checkpoint": "shipped"})
    assert metrics["no_digit"] == 1 and metrics["accuracy"] == 0.75 and metrics["classes"][-1] == "?"
    assert metrics["confusion"][7][10] == 1  # the blank 7, in the ? column
    assert metrics["macro_recall"] == pytest.approx((1 + 0.5 + 1) / 3)  # 1, 7 (one of two), 0
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["macro_recall"] == metrics["macro_recall"] and "?" not in saved["report_text"]


def test_a_blank_image_counts_as_no_digit(shipped):
    x = torch.zeros(2, 1, 16, 16, dtype=torch.uint8)
    x[1, 0, 3:13, 7:9] = 255  # a 1
    r = R.read_images(shipped, x)
    assert r.n_empty == 1 and r.probs[0, 10] == 1.0 and r.probs[1, :10].argmax() == 1


def test_digit_folder_lists_class_folders(tmp_path):
    for label, n in (("3", 2), ("8", 1), ("cats", 1)):
        (tmp_path / label).mkdir()
        for i in range(n):
            Image.new("L", (20, 20), 255).save(tmp_path / label / f"{i}.png")
    paths, labels = R.digit_folder(tmp_path, [str(i) for i in range(10)])
    assert labels.tolist() == [3, 3, 8] and all(p.endswith(".png") for p in paths)
    with pytest.raises(DigitlabError, match="no images"):
        R.digit_folder(tmp_path / "cats", [str(i) for i in range(10)])


def write_optdigits(folder, x: torch.Tensor, y: torch.Tensor) -> None:
    def text(images, labels):
        rows = []
        for a, label in zip(images, labels, strict=True):
            rows += ["".join("1" if v > 127 else "0" for v in row) for row in a[0].numpy()] + [f" {int(label)}"]
        return "header = 1\n" + "\n".join(rows) + "\n"

    folder.mkdir()
    (folder / "optdigits-orig.tra").write_text(text(x, y))
    (folder / "optdigits-orig.cv").write_text(text(x[:2], y[:2]))


def test_eval_cli_reads_another_shape_as_predict_does(tmp_path, isolated_data_env, capsys):
    x, y = bold_digits(32)
    write_optdigits(tmp_path / "opt", x, y)
    out = tmp_path / "report"
    args = ["eval", str(default_model_path()), "--dataset", "optdigits", "--data-dir", str(tmp_path / "opt")]
    assert main([*args, "--split", "train", "--out", str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 3 and metrics["accuracy"] == 1.0 and metrics["read_as"] == "digitlab predict"
    assert metrics["presentation"] == "raw" and metrics["no_digit"] == 0 and metrics["dataset"] == "optdigits"
    assert {p.name for p in out.iterdir()} >= {"confusion.png", "errors.png", "report.txt", "eval.json"}
    assert main([*args, "--presentation", "paper", "--out", str(out)]) == 0  # the cv split: 2 digits
    printed = capsys.readouterr().out
    assert "on 2 samples" in printed and "read as digitlab predict (paper)" in printed
    assert main([*args, "--presentation", "sideways"]) == 2


def test_eval_cli_reads_an_image_folder(tmp_path, capsys):
    x, y = bold_digits(64)
    for a, label in zip(x, y, strict=True):
        (tmp_path / "digits" / str(int(label))).mkdir(parents=True)
        Image.fromarray(255 - a[0].numpy()).save(tmp_path / "digits" / str(int(label)) / "a.png")
    out = tmp_path / "report"
    rc = main(["eval", str(default_model_path()), "--dataset", str(tmp_path / "digits"), "--out", str(out), "--json"])
    metrics = json.loads(capsys.readouterr().out)
    assert rc == 0 and metrics["n"] == 3 and metrics["accuracy"] == 1.0 and metrics["presentation"] == "files"


def test_read_files_counts_an_unreadable_file_as_misread(shipped, tmp_path):
    x, _ = bold_digits(64)
    good = tmp_path / "one.png"
    Image.fromarray(x[0, 0].numpy()).save(good)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    r = R.read_files(shipped, [str(good), str(bad)])
    assert r.n_error == 1 and r.n_empty == 0 and r.probs[1, 10] == 1.0 and r.probs[0, :10].argmax() == 1
