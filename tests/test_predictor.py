"""Predictor (digitlab.inference.predictor) with the shipped model and with a stand-in image model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import png
from digitlab.engine.checkpoint import save_checkpoint
from digitlab.inference import predictor as PR
from digitlab.inference.predictor import Predictor
from digitlab.models import create_model


@pytest.fixture(scope="module")
def shipped() -> Predictor:
    return Predictor.load()


def test_shipped_model_info(shipped):
    info = shipped.info
    assert info["task"] == "digits" and info["classes"] == [str(i) for i in range(10)]
    assert info["channels"] == 1 and info["image_size"] == 28
    assert info["accuracy"] is not None and info["accuracy"] > 0.99


def test_shipped_model_is_small():
    assert PR.default_model_path().stat().st_size < 700_000  # "a few hundred KB at most" (issue 4): 557 KB


def test_reads_inverted_enlarged_mnist_digits(shipped, mnist_test):
    x, y = mnist_test
    ok = 0
    for a, label in zip(x[:40], y[:40], strict=True):
        img = Image.fromarray(255 - a).resize((224, 224), Image.Resampling.BICUBIC)  # dark on white, big
        ok += shipped.predict(img).text == str(label)
    assert ok >= 39


def test_number_and_boxes(shipped, mnist_test):
    x, y = mnist_test
    row = np.full((60, 200), 255, dtype=np.uint8)
    for k, i in enumerate((0, 1, 2)):  # three digits, gaps between them
        row[16:44, 20 + 60 * k : 48 + 60 * k] = 255 - x[i]
    pred = shipped.predict(png(Image.fromarray(row).resize((600, 180))))
    assert pred.text == "".join(str(int(y[i])) for i in (0, 1, 2))
    assert len(pred.items) == 3 and all(it.box is not None for it in pred.items)
    assert pred.items[0].box[0] < pred.items[1].box[0] < pred.items[2].box[0]
    assert pred.items[0].input_image.shape == (28, 28)


def test_blank_is_empty(shipped):
    pred = shipped.predict(Image.new("L", (280, 280), 255))
    assert pred.status == "empty" and pred.text is None and pred.items == []


def test_errors_are_results_not_exceptions(shipped, tmp_path):
    good = tmp_path / "seven.png"
    img = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(img).line([(60, 40), (140, 40), (90, 170)], fill=0, width=12)
    img.save(good)
    preds = shipped.predict_many([str(good), str(tmp_path / "missing.png"), b"not an image", good])
    assert [p.status in ("ok", "uncertain") for p in preds] == [True, False, False, True]
    assert preds[1].status == "error" and "no such file" in preds[1].error
    assert preds[2].status == "error" and preds[2].error
    assert preds[0].text == "7" and preds[3].text == "7"


def test_predict_many_matches_predict(shipped, mnist_test):
    x, _ = mnist_test
    imgs = [Image.fromarray(a) for a in x[:10]]
    many = shipped.predict_many(imgs, batch_size=3)
    for img, m in zip(imgs, many, strict=True):
        one = shipped.predict(img)
        assert one.text == m.text
        assert np.allclose(one.items[0].probs, m.items[0].probs, atol=1e-5)


def test_to_dict_is_json_with_png_input(shipped, mnist_test):
    x, _ = mnist_test
    pred = shipped.predict(Image.fromarray(x[0]), top_k=5, include_input=True)
    d = pred.to_dict(include_input=True)
    json.dumps(d)
    item = d["items"][0]
    assert len(item["top_k"]) == 5 and len(item["probs"]) == 10
    assert abs(sum(item["probs"]) - 1) < 1e-3
    assert item["input_image"].startswith("data:image/png;base64,")
    assert "input_image" not in pred.to_dict()["items"][0]


def test_uncertain_flag(shipped, mnist_test, monkeypatch):
    x, _ = mnist_test
    monkeypatch.setattr(shipped, "uncertain_below", 1.01)  # nothing is that sure
    pred = shipped.predict(Image.fromarray(x[0]))
    assert pred.status == "uncertain" and pred.items[0].uncertain


def test_shipped_model_is_calibrated(shipped, mnist_test):
    """`digitlab export` fitted a temperature: a clear MNIST digit reads far above label smoothing's ~0.91
    cap, the uncalibrated threshold is not the one used, and no prediction changes (argmax)."""
    from digitlab.engine.checkpoint import load_checkpoint, model_from_checkpoint

    x, y = mnist_test
    assert 0.2 < shipped.temperature < 0.8 and shipped.uncertain_below == PR.CALIBRATED_UNCERTAIN_BELOW
    assert shipped.info["temperature"] == shipped.temperature
    preds = shipped.predict_many([Image.fromarray(a) for a in x[:50]])
    assert sum(p.text == str(int(t)) for p, t in zip(preds, y[:50], strict=True)) >= 48
    assert np.median([p.items[0].probability for p in preds]) > 0.99
    raw = load_checkpoint(PR.default_model_path())
    del raw["temperature"]
    uncalibrated = Predictor(model_from_checkpoint(raw), raw)
    assert uncalibrated.temperature == 1.0 and uncalibrated.uncertain_below == PR.UNCERTAIN_BELOW
    plain = uncalibrated.predict_many([Image.fromarray(a) for a in x[:50]])
    assert [p.text for p in plain] == [p.text for p in preds]
    assert np.median([p.items[0].probability for p in plain]) < 0.95  # label smoothing holds it near 0.91


def test_image_model_gives_class_names(tmp_path):
    model = create_model("cifar-net", num_classes=3, in_channels=3, image_size=32)
    ckpt = {
        "model_name": "cifar-net",
        "model_args": {"num_classes": 3, "in_channels": 3, "image_size": 32},
        "state_dict": model.state_dict(),
        "dataset": "pets",
        "task": "images",
        "classes": ["cat", "dog", "fish"],
        "channels": 3,
        "image_size": 32,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "metrics": {"test_acc": 0.5},
    }
    path = save_checkpoint(tmp_path / "img.pt", ckpt)
    p = Predictor.load(path)
    assert p.info["task"] == "images" and p.info["accuracy"] == 0.5
    pred = p.predict(Image.new("RGB", (100, 80), "orange"), top_k=2)
    assert pred.text in ckpt["classes"] and len(pred.items) == 1
    assert pred.items[0].box is None and len(pred.items[0].top_k) == 2
    assert pred.items[0].input_image.shape == (32, 32, 3)


def test_slim_checkpoint_drops_training_state():
    sd = {"w": torch.ones(2, 2), "n": torch.tensor(3)}
    slim = PR.slim_checkpoint({"model_name": "m", "state_dict": sd, "optimizer": {}, "rng": {}, "history": []})
    assert set(slim) == {"model_name", "state_dict"}
    assert slim["state_dict"]["w"].dtype == torch.float16 and slim["state_dict"]["n"].dtype == torch.int64


def _reading(probabilities: list[float]) -> list[PR.DigitPrediction]:
    return [PR.DigitPrediction(str(i), i, p, [], [], None, False) for i, p in enumerate(probabilities)]


def test_best_reading_splits_and_joins_only_when_the_model_is_clearly_surer():
    # Rows: 0, 1 = the two segments; 2, 3 = segment 0 cut in two; 4 = segments 0 and 1 joined.
    def best(whole0, whole1, half_a, half_b, joined):
        read = _reading([whole0, whole1, half_a, half_b, joined])
        prep = PR._Prepared("x", torch.empty(5, 1, 28, 28), [], [], 0.0, n_main=2, halves={0: [2]}, joins={0: 4})
        return [it.label for it in PR._best_reading(read, prep)]

    assert best(0.9, 0.9, 0.9, 0.9, 0.9) == ["0", "1"]  # confident as segmented: kept
    assert best(0.4, 0.9, 0.9, 0.9, 0.5) == ["2", "3", "1"]  # a weak wide digit, two sure halves: split
    assert best(0.5, 0.4, 0.6, 0.6, 0.9) == ["4"]  # two weak parts, one sure digit together: joined
    assert best(0.85, 0.9, 0.95, 0.95, 0.6) == ["0", "1"]  # halves only a little surer: not worth a split


def test_wide_single_digits_are_not_split(shipped, mnist_test):
    """Wide MNIST digits (an aspect over 1) as drawings: still one digit each."""
    x, y = mnist_test
    wide = [
        i for i in range(2000) if np.ptp(np.nonzero(x[i].max(0) > 50)[0]) > np.ptp(np.nonzero(x[i].max(1) > 50)[0])
    ][:30]
    ok = sum(shipped.predict(Image.fromarray(255 - x[i]).resize((280, 280))).text == str(y[i]) for i in wide)
    assert len(wide) == 30 and ok >= 28


def test_offers_are_preprocessed_only_when_they_could_win(shipped, mnist_test, monkeypatch):
    """Cuts and joins the model's reading cannot take are skipped: the same answers, less work."""
    from digitlab.data import synth
    from digitlab.inference import preprocess as P

    x, y = mnist_test
    samples = [synth.make_sample("number", x, y, 7, i) for i in range(40)]
    samples += [synth.make_sample("canvas", x, y, 7, i) for i in range(20)]
    images = [s.image for s in samples]
    made = []
    real_expand = P.Digit.expand

    def counting_expand(self, cuts=True, join=True):
        before = len(self.alternatives) + (self.merged_with_next is not None)
        real_expand(self, cuts, join)
        made.append(len(self.alternatives) + (self.merged_with_next is not None) - before)

    monkeypatch.setattr(P.Digit, "expand", counting_expand)
    lazy = shipped.predict_many(images)
    lazy_made = sum(made)
    made.clear()
    real_offers = PR._Prepared.add_offers
    monkeypatch.setattr(PR._Prepared, "add_offers", lambda self, probs: real_offers(self, probs, everything=True))
    full = shipped.predict_many(images)
    assert [r.text for r in lazy] == [r.text for r in full]
    for a, b in zip(lazy, full, strict=True):
        assert [round(it.probability, 4) for it in a.items] == [round(it.probability, 4) for it in b.items]
    assert sum(r.text == s.label for r, s in zip(lazy, samples, strict=True)) >= 55  # and they are right
    assert sum(made) > 0 and lazy_made < sum(made)  # the offers exist, and most were not needed


def test_add_offers_follows_the_bound(shipped, mnist_test):
    """A cut is preprocessed only below -SPLIT_COST, a join only when the pair is below -JOIN_COST."""
    from digitlab.data import synth

    x, y = mnist_test
    for i in range(100):  # written numbers until one has a segment with cuts on offer
        prep = shipped._prepare(synth.make_sample("number", x, y, 7, i).image, multi=True)
        if any(d.offers_cut for d in prep.digits):
            break
    k = next(j for j, d in enumerate(prep.digits) if d.offers_cut)
    sure = torch.full((prep.n_main, 10), 0.01)
    sure[:, 0] = 0.91  # log 0.91 > -SPLIT_COST, and any two sum above -JOIN_COST: nothing can beat them
    assert prep.add_offers(sure) is None and not prep.digits[k].alternatives and not prep.joins
    unsure = sure.clone()
    unsure[k] = 0.1  # log 0.1 < -SPLIT_COST: the cuts may win (and joins with its neighbours)
    extra = prep.add_offers(unsure)
    assert extra is not None and prep.digits[k].alternatives and k in prep.halves
    assert set(prep.joins) <= {k - 1, k}
    assert extra.shape[0] == sum(len(p) for p in prep.digits[k].alternatives) + len(prep.joins)
    assert prep.x.shape[0] == prep.n_main and len(prep.images) == prep.n_main + extra.shape[0]


@pytest.mark.parametrize("pool_early, negative_scale, left", [(True, False, 0), (False, False, 0), (True, True, 1)])
def test_fold_batchnorm_gives_the_same_outputs_with_fewer_layers(pool_early, negative_scale, left):
    # pool_early: the second stage is conv, pool, BN; that BN folds across the pool only if its scales are positive.
    from digitlab.inference.fold import fold_batchnorm
    from digitlab.models import create_model

    torch.manual_seed(0)
    model = create_model("fast", num_classes=10, in_channels=1, image_size=28, width=8, pool_early=pool_early)
    for m in model.modules():  # statistics and affine terms that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    if negative_scale:
        pooled_bn = [m for m in model.features if isinstance(m, torch.nn.BatchNorm2d)][1]
        pooled_bn.weight.data[::2] *= -1  # max(s*x) != s*max(x) for these channels
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) == left
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 3  # the caller's model is kept
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "setting,module,step,least,most",
    [  # synth ``sheet`` photos of the setting: read with the step, mostly misread without it (the test has teeth)
        ("box", "segment", "drop_frames", 0.9, 0.7),  # a printed box around the digit: not part of it
        ("desk", "preprocess", "paper_on_desk", 0.6, 0.4),  # the desk all round the sheet: not the paper
    ],
)
def test_reads_photographed_pages_with_more_in_view(
    shipped, mnist_test, monkeypatch, setting, module, step, least, most
):
    import importlib

    from digitlab.data import synth

    x, y = mnist_test
    samples = [s for s in (synth.make_sample("sheet", x, y, 7, i) for i in range(200)) if s.setting == setting]
    assert len(samples) >= 25

    def read() -> float:
        return float(np.mean([shipped.predict(s.image).text == s.label for s in samples]))

    assert read() >= least
    off = {"drop_frames": lambda segs: segs, "paper_on_desk": lambda gray, side=None: None}[step]
    monkeypatch.setattr(importlib.import_module(f"digitlab.inference.{module}"), step, off)
    assert read() < most
