"""What comes after the training loop: the reported evaluation, calibration, reports, curves.

Each step reads what the loop saved (the final model in memory, the run's ``best.pt``), in an order
that makes the run's files say how far it got: curves, then the calibrated checkpoints, then
``last.pt`` marked finished, then the evaluation's files with ``eval.json`` last. A run killed
anywhere in between is not finished, and ``--resume`` does these steps again.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from digitlab.data.base import ImageData
from digitlab.engine.calibrate import calibrate_checkpoint, fit_model_temperature
from digitlab.engine.checkpoint import load_checkpoint, save_checkpoint
from digitlab.engine.evaluation import final_evaluation, report_evaluation
from digitlab.engine.plan import Plan
from digitlab.engine.rundir import write_metrics_csv
from digitlab.evaluate.calibration import fit_temperature
from digitlab.evaluate.plots import plot_curves
from digitlab.evaluate.report import format_report


def finish_run(
    run_dir: Path,
    plan: Plan,
    data: ImageData,
    model: nn.Module,
    last: dict,
    resume_state: dict,
    *,
    finished: bool,
    best_epoch: int,
    console: Console,
    quiet: bool,
) -> dict:
    """Evaluate the final ``model`` in fp32 and write the run's last artefacts; returns eval.json's dict.

    Args:
        run_dir: the claimed run directory.
        plan: the run's plan.
        data: the data, on the model's device.
        model: the final model (the EMA one when the run keeps one).
        last: its inference checkpoint (``make_checkpoint``), completed here with metrics and temperature.
        resume_state: what ``last.pt`` holds beyond it (optimizer, RNG, ...).
        finished: the run reached its last epoch (a dry run may stop before): only then is it calibrated,
            evaluated with TTA and marked finished.
        best_epoch: the epoch that ``best.pt`` holds.
    """
    history = last["history"]
    write_metrics_csv(run_dir / "metrics.csv", history)  # again: a kill after the last epoch's last.pt lost its row
    steps = resume_state.get("step_losses")
    plot_curves(history, run_dir / "curves.png", steps=steps.tolist() if isinstance(steps, torch.Tensor) else None)
    tta = plan.tta and finished
    res = final_evaluation(model, data, plan.mean, plan.std, tta=tta)
    last["metrics"] = {"test_acc": res.accuracy, "test_loss": res.loss}
    if finished and len(data.test_y):
        if tta:  # the temperature is for one view per image, as `digitlab predict` reads them
            last["temperature"] = fit_model_temperature(model, data, plan.mean, plan.std)[0]
        else:
            last["temperature"] = fit_temperature(res.logits, data.test_y.cpu())
        _calibrate_best(run_dir / "best.pt", last, best_epoch, data)
    save_checkpoint(run_dir / "last.pt", last | resume_state | {"finished": finished})
    metrics = report_evaluation(
        res,
        data,
        tta=tta,
        temperature=last.get("temperature"),
        out_dir=run_dir,
        checkpoint=str(run_dir / "last.pt"),
        epoch=last["epoch"],
        dataset=plan.dataset,
    )
    if not quiet:
        console.print(format_report(metrics), highlight=False)
    return metrics


def _calibrate_best(path: Path, last: dict, best_epoch: int, data: ImageData) -> None:
    """best.pt gets a temperature too, so that any checkpoint of a finished run is calibrated: the final
    model's own when best.pt is the last epoch, else one fitted to best.pt's weights."""
    if best_epoch == last["epoch"]:
        save_checkpoint(path, last)
        return
    if not path.exists():
        return
    best = load_checkpoint(path)
    if "temperature" not in best:
        best["temperature"] = calibrate_checkpoint(best, data)[0]
        save_checkpoint(path, best)
