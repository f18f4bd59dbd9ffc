"""`digitlab eval`: a checkpoint's accuracy, per-class report, confusion matrix and worst errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import typer

from digitlab.cli.app import app
from digitlab.cli.output import console


def checkpoint_data(ckpt: dict, dataset: str | None = None, data_dir: str | None = None):
    """The data a checkpoint was trained on (or ``dataset``, checked to have its shape), loaded the
    way its training loaded it (an image folder's gray/RGB and size)."""
    from digitlab.data import load_dataset
    from digitlab.data.locate import stored_data_dir
    from digitlab.engine.checkpoint import check_compatible
    from digitlab.engine.plan import check_folder

    name = dataset or ckpt.get("dataset", "mnist")
    check_folder(name)  # a run's image folder is stored by absolute path: say so when it has moved
    data_cfg = (ckpt.get("config") or {}).get("data", {})
    data = load_dataset(
        name,
        data_dir if data_dir is not None else stored_data_dir(data_cfg.get("data_dir")),
        grayscale=data_cfg.get("grayscale") if dataset is None else None,
        image_size=data_cfg.get("image_size") if dataset is None else None,
    )
    check_compatible(ckpt, data.channels, data.image_size, data.num_classes, name)
    return data


@app.command("eval")
def eval_cmd(
    checkpoint: str = typer.Argument(
        ...,
        help="A checkpoint file, a run directory (its best.pt), or a model.onnx of `digitlab export --format onnx`.",
    ),
    dataset: str | None = typer.Option(
        None,
        help="Evaluate on another dataset (default: the checkpoint's); one of another shape (usps, optdigits) or an "
        "image folder of digits is read as `digitlab predict` reads.",
    ),
    data_dir: str | None = typer.Option(None, help="Where the data files are."),
    out: str | None = typer.Option(
        None,
        help="Folder for confusion.png, errors.png, report.txt, eval.json (default: eval-<checkpoint>/ beside a "
        "run's checkpoint, so training's own files stay; the current folder for other checkpoints).",
    ),
    tta: bool | None = typer.Option(
        None, "--tta/--no-tta", help="Test-time augmentation (default: as the training's final evaluation did)."
    ),
    device: str = typer.Option("auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    presentation: str | None = typer.Option(
        None,
        help="Read each image as `digitlab predict` does, shown as raw (the stored image: white on black, tight) "
        "or paper (dark on white, 2x, with a margin). Default: raw for a dataset of another shape than the "
        "checkpoint's (usps, optdigits) and the files of an image folder; the plain tensor path otherwise.",
    ),
    split: str = typer.Option("test", help="The split to evaluate: test, or train (usps keeps only train here)."),
) -> None:
    """Evaluate a checkpoint: accuracy, report, worst errors.

    Accuracy, precision/recall/F1 per class, the confusion matrix and the worst errors, on the
    checkpoint's dataset, or on another (read as `digitlab predict` reads when its shape differs).
    An exported model.onnx is evaluated the same way, in onnxruntime, to check the export.
    """
    from digitlab.engine.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint_path
    from digitlab.engine.device import resolve_device
    from digitlab.engine.evaluation import OnnxModule, default_eval_dir, final_evaluation, report_evaluation
    from digitlab.engine.plan import trained_with_tta
    from digitlab.errors import DigitlabError
    from digitlab.evaluate.reading import evaluate_as_read, reading_dir, reading_source
    from digitlab.evaluate.report import format_report
    from digitlab.inference.onnx import is_onnx_path, load_onnx

    path = resolve_checkpoint_path(checkpoint)
    onnx_model = None
    if is_onnx_path(path):  # the exported graph in onnxruntime, through the same evaluation as its checkpoint
        if device not in ("auto", "cpu"):
            raise DigitlabError(f"an ONNX model runs on the CPU here (onnxruntime), not on {device}; drop --device")
        onnx_model, ckpt = load_onnx(path)
    else:
        ckpt = load_checkpoint(path)

    def load_model():
        return OnnxModule(onnx_model) if onnx_model is not None else model_from_checkpoint(ckpt, resolve_device(device))

    source = reading_source(ckpt, dataset, data_dir, presentation, split)
    if source is not None:  # the predict path: each image through digitlab.inference.preprocess
        from digitlab.inference.predictor import Predictor

        if onnx_model is not None:
            predictor = Predictor(onnx_model, ckpt, "cpu")
        else:
            predictor = Predictor(load_model(), ckpt, resolve_device(device))
        shown = None if source.paths is not None else presentation or "raw"
        out_dir = Path(out) if out else reading_dir(path, source.name, shown)
        meta = {"checkpoint": str(path), "epoch": ckpt.get("epoch"), "tta": False, "loss": None, "calibration": None}
        metrics = evaluate_as_read(predictor, source, presentation, out_dir, meta)
        if as_json:
            print(json.dumps(metrics, indent=2, default=str))
            return
        console.print(format_report(metrics), highlight=False)
        console.print(
            f"read as digitlab predict ({metrics['presentation']}): {metrics['no_digit']} read as no digit, "
            f"{metrics['several_digits']} as several (column ?); wrote confusion.png, errors.png, report.txt, "
            f"eval.json to {out_dir}",
            highlight=False,
        )
        return
    data = checkpoint_data(ckpt, dataset, data_dir)
    if split == "train":
        data = replace(data, test_x=data.train_x, test_y=data.train_y)
    name = dataset or ckpt.get("dataset", "mnist")
    model = load_model()
    out_dir = Path(out) if out else default_eval_dir(path)
    if tta is None:  # the same accuracy that `digitlab train` printed for this checkpoint
        tta = trained_with_tta(ckpt)
    # The one evaluation training's final report uses too: fp32, the same eval.json schema.
    res = final_evaluation(model, data, tuple(ckpt["mean"]), tuple(ckpt["std"]), tta=tta)
    metrics = report_evaluation(
        res,
        data,
        tta=tta,
        temperature=ckpt.get("temperature"),  # fitted by training or export: probabilities as `predict` shows
        out_dir=out_dir,
        checkpoint=str(path),
        epoch=ckpt.get("epoch"),
        dataset=name,
    )
    if as_json:
        print(json.dumps(metrics, indent=2, default=str))
    else:
        console.print(format_report(metrics), highlight=False)
        console.print(f"wrote confusion.png, errors.png, report.txt, eval.json to {out_dir}", highlight=False)
