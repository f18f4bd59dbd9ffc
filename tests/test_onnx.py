"""ONNX export (inference/onnx_export.py) and running it (inference/onnx.py): same answers as PyTorch."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import onnx  # the test extra installs onnx and onnxruntime: a missing one fails here instead of skipping
import pytest
import torch
from PIL import Image, ImageDraw

from digitlab.cli import OPTIONAL_AT_RUN_TIME, main
from digitlab.engine.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from digitlab.errors import DigitlabError
from digitlab.inference.onnx import INPUT_NAME, OnnxModel, is_onnx_path, load_onnx
from digitlab.inference.onnx_export import export_onnx
from digitlab.inference.predictor import Predictor, default_model_path
from digitlab.models import create_model


def drawn_digits() -> list[Image.Image]:
    """A 7, a 1 and a 4 drawn with lines: real ink on paper for the preprocessing, as a user gives it."""
    strokes = [[(30, 20), (70, 20), (45, 85)], [(50, 15), (50, 85)], [(60, 85), (60, 15), (25, 60), (75, 60)]]
    images = []
    for pts in strokes:
        img = Image.new("L", (100, 100), 255)
        ImageDraw.Draw(img).line(pts, fill=0, width=8)
        images.append(img)
    return images


@pytest.fixture(scope="module")
def shipped_onnx(tmp_path_factory):
    ckpt = load_checkpoint(default_model_path())
    path = tmp_path_factory.mktemp("onnx") / "default.onnx"
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (40, 1, 28, 28), dtype=np.uint8))
    return ckpt, export_onnx(ckpt, path, check_images=images)


def test_export_matches_pytorch_and_reports_the_difference(shipped_onnx):
    ckpt, result = shipped_onnx
    assert result.real_inputs and result.n_checked == 40
    assert result.max_abs_diff < 1e-4 and result.agree == 1.0
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 28, 28]


def test_metadata_holds_what_a_deployment_needs(shipped_onnx):
    ckpt, result = shipped_onnx
    props = {e.key: e.value for e in onnx.load(str(result.path)).metadata_props}
    assert json.loads(props["classes"]) == [str(i) for i in range(10)]
    assert float(props["temperature"]) == pytest.approx(ckpt["temperature"])
    assert props["image_size"] == "28" and props["channels"] == "1" and props["task"] == "digits"
    meta = json.loads(props["digitlab"])
    assert meta["model_name"] == ckpt["model_name"] and meta["mean"] == pytest.approx(ckpt["mean"])
    model, fields = load_onnx(result.path)
    assert fields["mean"] == [0.0] and fields["std"] == [1.0]  # the graph normalises: pixels in [0, 1]
    assert fields["temperature"] == pytest.approx(ckpt["temperature"]) and fields["classes"] == ckpt["classes"]


def test_the_graph_takes_pixels_in_0_1_with_the_normalisation_inside(shipped_onnx):
    ckpt, result = shipped_onnx
    model, _ = load_onnx(result.path)
    torch_model = Predictor.load(runtime="torch").model
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        ref = torch_model((x - ckpt["mean"][0]) / ckpt["std"][0])
    assert torch.allclose(torch.from_numpy(model(x.numpy())), ref, atol=1e-4)


def test_predictor_on_onnx_reads_as_the_checkpoint_does(shipped_onnx):
    _, result = shipped_onnx
    on_onnx, on_torch = Predictor.load(result.path), Predictor.load(runtime="torch")
    assert isinstance(on_onnx.model, OnnxModel) and on_onnx.temperature == on_torch.temperature
    for a, b in zip(on_onnx.predict_many(drawn_digits()), on_torch.predict_many(drawn_digits()), strict=True):
        assert a.text == b.text and a.status == b.status
        assert np.allclose(a.items[0].probs, b.items[0].probs, atol=1e-4)
        assert np.array_equal(a.items[0].input_image, b.items[0].input_image)  # the same preprocessing
    assert [p.text for p in on_onnx.predict_many(drawn_digits())] == ["7", "1", "4"]


def test_an_onnx_predictor_pickles_for_serves_processes(shipped_onnx):
    _, result = shipped_onnx
    p = Predictor.load(result.path)
    before = p.predict(drawn_digits()[0])
    copy = pickle.loads(pickle.dumps(p))  # what serve's prediction processes receive
    assert copy.model._session is None  # a fresh session in the new process, made on first use
    after = copy.predict(drawn_digits()[0])
    assert after.text == before.text and after.items[0].probs == pytest.approx(before.items[0].probs, abs=1e-6)


def test_an_rgb_image_model_exports_and_predicts(tmp_path):
    torch.manual_seed(0)
    model = create_model("cifar-net", num_classes=3, in_channels=3, image_size=32)
    ckpt = {
        "digitlab": FORMAT_VERSION,
        "model_name": "cifar-net",
        "model_args": {"num_classes": 3, "in_channels": 3, "image_size": 32},
        "state_dict": model.state_dict(),
        "dataset": "toys",
        "task": "images",
        "classes": ["cat", "dog", "fox"],
        "channels": 3,
        "image_size": 32,
        "mean": [0.4, 0.5, 0.6],
        "std": [0.2, 0.25, 0.3],
    }
    save_checkpoint(tmp_path / "toy.pt", ckpt)
    result = export_onnx(ckpt, tmp_path / "toy.onnx")
    assert not result.real_inputs and result.max_abs_diff < 1e-4
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    a = Predictor.load(result.path).predict(photo)
    b = Predictor.load(tmp_path / "toy.pt").predict(photo)
    assert a.text == b.text and a.text in ckpt["classes"]
    assert np.allclose(a.items[0].probs, b.items[0].probs, atol=1e-5)


def test_not_an_onnx_file_is_a_clear_error(tmp_path):
    assert is_onnx_path("m.ONNX") and not is_onnx_path("best.pt")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 not protobuf at all" * 10)
    with pytest.raises(DigitlabError, match="not a readable ONNX model|no digitlab metadata"):
        Predictor.load(bad)
    with pytest.raises(DigitlabError, match="ONNX model not found"):
        Predictor.load(tmp_path / "missing.onnx")
    plain = tmp_path / "plain.onnx"  # a valid ONNX graph that digitlab did not write
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph), str(plain))
    with pytest.raises(DigitlabError, match="no digitlab metadata"):
        Predictor.load(plain)


def test_cli_export_onnx_then_predict_with_it(tmp_path, capsys, isolated_data_env):
    out = tmp_path / "m.onnx"
    assert main(["export", str(default_model_path()), str(out), "--format", "onnx", "--no-calibrate"]) == 0
    printed = capsys.readouterr().out
    assert "max abs logit difference" in printed and "same class for" in printed
    diff = float(printed.split("max abs logit difference ")[1].split(",")[0])
    assert diff < 1e-4
    drawn_digits()[0].save(tmp_path / "seven.png")
    assert main(["predict", str(tmp_path / "seven.png"), "--model", str(out), "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert preds[0]["text"] == "7" and len(preds[0]["items"][0]["probs"]) == 10


def test_cli_export_refuses_mixed_formats(tmp_path, capsys):
    ckpt = str(default_model_path())
    assert main(["export", ckpt, str(tmp_path / "x"), "--format", "tflite"]) == 2
    assert "unknown export format 'tflite'" in capsys.readouterr().err
    assert main(["export", ckpt, "--as-default", "--format", "onnx"]) == 2
    assert "--as-default writes a digitlab checkpoint" in capsys.readouterr().err
    assert main(["export", ckpt, str(tmp_path / "x"), "--format", "onnx", "--seed-format"]) == 2
    assert "cannot be combined" in capsys.readouterr().err


@pytest.mark.slow  # a spawned process imports torch and onnxruntime: tens of seconds on a busy CPU
def test_serve_runs_an_onnx_model_in_a_prediction_process(shipped_onnx):
    from fastapi.testclient import TestClient

    from digitlab.web.app import create_app

    _, result = shipped_onnx
    buf = io.BytesIO()
    drawn_digits()[2].save(buf, format="PNG")
    with TestClient(create_app(checkpoint=result.path, processes=1)) as c:
        info = c.get("/api/model").json()
        r = c.post("/api/predict", files={"file": ("four.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["text"] == "4" and info["name"] == "fast-wide"


def test_a_model_onnx_cannot_express_is_a_clear_error(tmp_path, monkeypatch):
    ckpt = load_checkpoint(default_model_path())

    def fails(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::magic' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(torch.onnx, "export", fails)
    with pytest.raises(DigitlabError, match="cannot export model 'fast-wide' to ONNX .*aten::magic"):
        export_onnx(ckpt, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_explain_with_an_onnx_model_leaves_out_the_saliency_row(shipped_onnx, tmp_path, capsys):
    _, result = shipped_onnx
    drawn_digits()[0].save(tmp_path / "seven.png")
    out = tmp_path / "why.png"
    assert main(["predict", str(tmp_path / "seven.png"), "--model", str(result.path), "--explain", str(out)]) == 0
    assert Image.open(out).size[1] == 520  # inputs and probabilities; no gradients in onnxruntime


# What a deployment without torch leaves out (README, ONNX; the CLI names each when a command needs it):
# importing any of them raises ImportError.
NO_TORCH = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in OPTIONAL_AT_RUN_TIME)


def _without_torch(tmp_path) -> dict[str, str]:
    """An environment whose Python processes (spawned ones included) cannot import torch."""
    import os

    site = tmp_path / "no-torch"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_TORCH)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


@pytest.mark.slow  # three interpreter start-ups, one of them a server with a prediction process
def test_an_onnx_deployment_needs_no_torch(shipped_onnx, tmp_path):
    """`predict --model m.onnx`, `predict` and `serve` with the shipped model (its ONNX twin) answer where
    torch (and the other packages only training and export need) cannot be imported."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    _, result = shipped_onnx
    env = _without_torch(tmp_path)
    blocked = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert blocked.returncode != 0 and "import of torch halted" in blocked.stderr  # the block itself works
    seven = tmp_path / "seven.png"
    drawn_digits()[0].save(seven)
    cmd = [sys.executable, "-m", "digitlab", "predict", "--model", str(result.path), str(seven), "--json"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)[0]["text"] == "7"
    train = subprocess.run(cmd[:3] + ["train", "--epochs", "1"], env=env, capture_output=True, text=True, timeout=120)
    assert train.returncode == 2 and "needs torch, which is not installed" in train.stderr  # one line, no traceback
    assert "Traceback" not in train.stderr
    shipped = subprocess.run(cmd[:4] + cmd[6:], env=env, capture_output=True, text=True, timeout=120)
    assert shipped.returncode == 0, shipped.stderr[-2000:]  # no --model: the shipped model's ONNX twin
    assert json.loads(shipped.stdout)[0]["text"] == "7"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve = [sys.executable, "-m", "digitlab", "serve", "--port", str(port)]  # the shipped model, as ONNX
    server = subprocess.Popen([*serve, "--processes", "1"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            assert server.poll() is None, server.communicate()[1][-2000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        r = httpx.post(f"{url}/api/predict", files={"file": ("7.png", seven.read_bytes(), "image/png")}, timeout=30)
        assert r.status_code == 200 and r.json()["text"] == "7", r.text
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_shipped_model_runs_as_its_onnx_twin():
    """predict and serve run assets/default.onnx: exported from assets/default.pt (its digest in the
    metadata), the same logits within 1e-4, and the PyTorch checkpoint still there for --explain."""
    from digitlab.inference.predictor import default_onnx_path

    twin = default_onnx_path()
    assert twin is not None and twin.name == "default.onnx"
    ckpt = load_checkpoint(default_model_path())
    model, fields = load_onnx(twin)
    assert fields["checkpoint_digest"] == ckpt["digest"]  # re-export when default.pt changes: --as-default
    assert fields["temperature"] == pytest.approx(ckpt["temperature"]) and fields["classes"] == ckpt["classes"]
    auto, torch_one = Predictor.load(), Predictor.load(runtime="torch")
    assert isinstance(auto.model, OnnxModel) and isinstance(torch_one.model, torch.nn.Module)
    x = np.random.default_rng(1).random((32, 1, 28, 28), dtype=np.float32)
    ref = torch_one._logits(((x - ckpt["mean"][0]) / ckpt["std"][0]).astype(np.float32))
    assert np.abs(auto._logits(x) - ref).max() < 1e-4
    for img in drawn_digits():
        a, b = auto.predict(img), torch_one.predict(img)
        assert a.text == b.text and a.items[0].probability == pytest.approx(b.items[0].probability, abs=1e-5)
    assert auto.info == torch_one.info  # /api/model and the predict table say the same either way
    with pytest.raises(DigitlabError, match="unknown runtime"):
        Predictor.load(runtime="tensorflow")


def test_a_thread_setting_made_before_torch_loads_reaches_a_pytorch_model(monkeypatch):
    """serve calls set_threads(1) before anything imports torch; the PyTorch model loaded after it runs on 1."""
    from digitlab.inference import onnx as onnx_mod

    before = torch.get_num_threads()
    monkeypatch.setattr(onnx_mod, "_threads", 1)  # as set_threads leaves it where torch was not loaded yet
    try:
        torch.set_num_threads(2)
        Predictor.load(runtime="torch")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cli_eval_of_an_onnx_export_reports_what_its_checkpoint_does(tmp_path, capsys):
    """`eval model.onnx` runs the exported graph through the checkpoint's evaluation: the same numbers, the same
    default TTA; the reading path takes it too; it runs on the CPU only, and says so."""
    base = ["train", "--dataset", "digits", "--model", "fast", "--epochs", "2", "--runs-dir", str(tmp_path), "-q"]
    assert main([*base, "--augment", "shift", "--tta", "--name", "d"]) == 0
    onnx_path = tmp_path / "d.onnx"
    assert main(["export", str(tmp_path / "d"), str(onnx_path), "--format", "onnx", "--no-calibrate"]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "d" / "best.pt"), "--json"]) == 0
    from_pt = json.loads(capsys.readouterr().out)
    assert main(["eval", str(onnx_path), "--json", "--out", str(tmp_path / "e")]) == 0
    from_onnx = json.loads(capsys.readouterr().out)
    assert from_onnx["checkpoint"] == str(onnx_path) and from_onnx["dataset"] == from_pt["dataset"]
    assert from_onnx["tta"] == from_pt["tta"] is True  # the training's final evaluation shifted: so does this
    assert from_pt["accuracy"] > 0.9  # trained: no near-ties for float rounding (~1e-6) to flip
    assert from_onnx["accuracy"] == from_pt["accuracy"] and from_onnx["confusion"] == from_pt["confusion"]
    assert from_onnx["loss"] == pytest.approx(from_pt["loss"], abs=1e-4)
    assert (tmp_path / "e" / "eval.json").is_file()

    folder = tmp_path / "mydigits"  # an image folder of digits: read as `digitlab predict` reads, by onnxruntime
    for label in ("1", "7"):
        (folder / label).mkdir(parents=True)
        img = Image.new("L", (40, 40), 255)
        img.paste(0, (18, 6, 23, 34))
        img.save(folder / label / "a.png")
    assert main(["eval", str(onnx_path), "--dataset", str(folder), "--out", str(tmp_path / "f")]) == 0
    assert "read as digitlab predict" in capsys.readouterr().out
    assert sum(map(sum, json.loads((tmp_path / "f" / "eval.json").read_text())["confusion"])) == 2

    assert main(["eval", str(onnx_path), "--device", "cuda"]) == 2
    assert "an ONNX model runs on the CPU here" in capsys.readouterr().err
