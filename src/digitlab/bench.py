"""`digitlab bench`: time to accuracy, training throughput vs a seed-style reference, inference, memory.

Every number is measured on the machine it runs on, repeated, and reported as the median with
its spread (min-max). The reference loop is written the way the seeds write training: a
per-sample ``torch.utils.data.Dataset`` that normalises each image, a ``DataLoader`` with batch 64
and shuffling, fp32, contiguous tensors. digitlab's path is the engine's: uint8 data in memory,
index-sliced batches normalised as a whole, channels_last and bf16 autocast.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from digitlab.config import RunConfig
from digitlab.data.base import ImageData

TARGETS = (0.99, 0.995)
CIFAR_TARGETS = (0.90, 0.93, 0.94)  # `digitlab bench --cifar`, on CIFAR-10 test (or the JPEG copy's)
# One recipe and code path at two sizes: the narrow net's minutes, airbench's widths' accuracy.
CIFAR_PRESETS = ("cifar-fast-cpu", "cifar-fast")
SEED_MODELS = ("cnn", "cnn-k", "cnn-004", "cnn-small", "lenet5", "mlp")  # the MNIST seeds
SEED_PRESET = {
    "cnn": "seed000",
    "cnn-k": "seed001",
    "cnn-004": "seed004",
    "cnn-small": "seed002-cnn",
    "lenet5": "seed003",
    "mlp": "seed002-mlp",
}
REF_BATCH = 64  # the seeds' DataLoader batch size


def spread(values: list[float]) -> dict:
    """Median, min, max and the raw values of a list of measurements."""
    v = [float(x) for x in values]
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "values": v}


# ---------------------------------------------------------------------------------------------
# 1. time to accuracy


def _time_to(history: list[dict], target: float) -> float | None:
    """Elapsed seconds at the first evaluation that reached ``target`` (None if none did)."""
    for row in history:
        if row.get("test_acc") is not None and row["test_acc"] >= target:
            return row["elapsed"]
    return None


def time_to_accuracy(
    data: ImageData,
    preset: str,
    repeats: int,
    *,
    device: str,
    quick: bool,
    compile: bool = False,
    targets: tuple[float, ...] = TARGETS,
) -> dict:
    """Train a preset through the engine's ``train()`` ``repeats`` times (seeds 0..n-1).

    With ``compile``, compiling happens before the clock; ``compile_seconds`` reports it apart.
    """
    from digitlab.engine.presets import apply_preset
    from digitlab.engine.train import train

    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="digitlab-bench-") as tmp:
        for seed in range(repeats):
            cfg = apply_preset(RunConfig(runs_dir=tmp, name=f"{preset}-{seed}"), preset)
            cfg.train.seed, cfg.train.device, cfg.train.eval_every, cfg.train.compile = seed, device, 1, compile
            if quick:
                cfg.train.epochs, cfg.train.dry_run = 1, True  # 3 batches, then the evaluation
            res = train(cfg, data=data, quiet=True)
            runs.append(
                {
                    "seed": seed,
                    "final_acc": res.final_acc,
                    "train_seconds": res.train_seconds,
                    "compile_seconds": res.compile_seconds,
                    **{f"time_to_{t:.3f}": _time_to(res.history, t) for t in targets},
                    "history": [{k: r[k] for k in ("epoch", "test_acc", "elapsed")} for r in res.history],
                }
            )
    out = {
        "preset": preset,
        "compile": compile,
        "runs": runs,
        "final_acc": spread([r["final_acc"] for r in runs]),
        "train_seconds": spread([r["train_seconds"] for r in runs]),
        "compile_seconds": spread([r["compile_seconds"] for r in runs]),
    }
    for t in targets:
        hit = [r[f"time_to_{t:.3f}"] for r in runs]
        out[f"time_to_{t:.3f}"] = spread(hit) if all(h is not None for h in hit) else None
        out[f"reached_{t:.3f}"] = sum(h is not None for h in hit)
    return out


# Runs the CLI and reports the process's own peak RSS. VmHWM, not getrusage: ru_maxrss of a child
# started by fork/exec also counts the parent's memory at the fork.
_RSS_WRAPPER = (
    "import sys\n"
    "from digitlab.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
    "sys.stderr.write('PEAK_RSS_KB=' + (hwm[0].split()[1] if hwm else '0') + '\\n')\n"
    "sys.exit(rc)\n"
)


def command_wall(args: list[str], repeats: int, *, cold_compile_cache: bool = False) -> dict:
    """Wall time and peak RSS of a whole ``digitlab ...`` command in a fresh process.

    ``cold_compile_cache``: each run gets an empty inductor cache, so ``--compile`` costs what it costs
    the first time (later runs reuse compiled kernels from the cache and start faster).
    """
    walls, rss = [], []
    for _ in range(repeats):
        env = dict(os.environ)
        cache = tempfile.mkdtemp(prefix="digitlab-inductor-") if cold_compile_cache else None
        if cache:
            env["TORCHINDUCTOR_CACHE_DIR"] = cache
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *args], capture_output=True, text=True, env=env)
        walls.append(time.perf_counter() - t0)
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        kb = [line.split("=", 1)[1] for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB=")]
        rss.append(int(kb[-1]) / 1024 if kb else float("nan"))
    return {
        "command": "digitlab " + " ".join(args),
        "wall_seconds": spread(walls),
        "peak_rss_mb": spread(rss),
        "cold_compile_cache": cold_compile_cache,
    }


# ---------------------------------------------------------------------------------------------
# 2. training throughput: digitlab's path vs the seeds' way


class SeedStyleDataset(torch.utils.data.Dataset):
    """How the seeds feed MNIST: one image at a time, converted and normalised in Python."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mean: float, std: float):
        self.x, self.y, self.mean, self.std = x, y, mean, std

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = torch.from_numpy(self.x[i]).float().div(255.0)  # (1, 28, 28), like ToTensor()
        return (img - self.mean) / self.std, int(self.y[i])  # like Normalize((0.1307,), (0.3081,))


def _optimizer(model: torch.nn.Module, preset: str) -> torch.optim.Optimizer:
    from digitlab.engine.optim import build_optimizer
    from digitlab.engine.presets import apply_preset

    return build_optimizer(model, apply_preset(RunConfig(), preset).train)


def reference_throughput(model_name: str, data: ImageData, steps: int) -> float:
    """Images/s of a seed-style loop: Dataset + DataLoader(batch 64, shuffle), fp32, contiguous, nn.Dropout."""
    from digitlab.models import create_model
    from digitlab.models.layers import as_the_seed_wrote_it

    torch.manual_seed(0)
    model = as_the_seed_wrote_it(create_model(model_name, num_classes=10, in_channels=1, image_size=28))
    opt = _optimizer(model, SEED_PRESET[model_name])
    ds = SeedStyleDataset(data.train_x.numpy(), data.train_y.numpy(), data.mean[0], data.std[0])
    loader = torch.utils.data.DataLoader(ds, batch_size=REF_BATCH, shuffle=True)
    model.train()
    seen, t0, it = 0, time.perf_counter(), iter(loader)
    for i in range(steps + 2):  # two warm-up steps outside the clock
        if i == 2:
            t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y) if i >= 2 else 0
    return seen / (time.perf_counter() - t0)


def seed_step(
    model_name: str,
    data: ImageData,
    *,
    precision: str,
    compile: bool = False,
    batch_size: int = REF_BATCH,
    device: str = "cpu",
):
    """The engine's ``train_step`` for a seed model (its preset's optimizer, the given batch and precision).

    Returns ``(step, compile_seconds)``; ``step()`` trains on the next batch and returns its size. With
    ``compile``, the model is compiled the way ``digitlab train --compile`` does it, before returning.
    """
    from digitlab.data.loader import iterate_batches
    from digitlab.engine.dist import DistInfo
    from digitlab.engine.optim import build_optimizer, compiled_step
    from digitlab.engine.plan import resolve
    from digitlab.engine.presets import apply_preset
    from digitlab.engine.train import compile_for_training, train_step
    from digitlab.models import create_model

    dev = torch.device(device)
    cfg = apply_preset(RunConfig(), SEED_PRESET[model_name])
    cfg.train.batch_size, cfg.train.channels_last, cfg.train.precision = batch_size, True, precision
    plan = resolve(cfg, data, dev, DistInfo())  # one process, whatever torchrun says
    torch.manual_seed(0)
    # The reference's model (the registry's defaults for MNIST), not the preset's width: same work on both sides.
    model = create_model(model_name, num_classes=10, in_channels=1, image_size=28).to(dev)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in torch's type stubs
    opt = build_optimizer(model, plan.train)
    opt_step = compiled_step(opt) if plan.train.compile_step else opt.step  # as the preset trains
    data = data.to(dev)
    forward, compile_seconds = model, 0.0
    if compile:
        forward, compile_seconds = compile_for_training(model, data, plan)
    gen = torch.Generator().manual_seed(0)
    model.train()

    def batches():
        while True:
            yield from iterate_batches(data.train_x, data.train_y, batch_size, shuffle=True, generator=gen)

    it = batches()

    def step() -> int:
        xb, yb = next(it)  # (B, 1, 28, 28) uint8
        train_step(
            forward,
            opt,
            xb,
            yb,
            mean=plan.mean,
            std=plan.std,
            precision=plan.precision,
            channels_last=True,
            label_smoothing=plan.train.label_smoothing,
            optimizer_step=opt_step,
        )
        return yb.shape[0]

    return step, compile_seconds


def images_per_second(step, steps: int, device: str = "cpu") -> float:
    """Two warm-up steps outside the clock, then ``steps`` timed ones."""
    dev = torch.device(device)
    for _ in range(2):
        step()
    _sync(dev)
    t0 = time.perf_counter()
    seen = sum(step() for _ in range(steps))
    _sync(dev)
    return seen / (time.perf_counter() - t0)


def fast_throughput(
    model_name: str,
    data: ImageData,
    steps: int,
    *,
    precision: str,
    compile: bool = False,
    batch_size: int = REF_BATCH,
    device: str = "cpu",
) -> float:
    """Images/s of digitlab's engine path (same model, optimizer and batch size as the seed)."""
    step, _ = seed_step(model_name, data, precision=precision, compile=compile, batch_size=batch_size, device=device)
    return images_per_second(step, steps, device)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def throughput(
    data: ImageData, repeats: int, steps: int, *, device: str, models=SEED_MODELS, compile: bool = False
) -> dict:
    """The reference and digitlab's paths for each seed model, in turn, ``repeats`` times; ratios of the medians.

    digitlab's paths: fp32; bf16 where the hardware computes it (emulated bf16 is many times slower, so it
    is skipped, not timed); with ``compile``, torch.compile at the precision ``auto`` picks.
    """
    from digitlab.engine.device import cpu_has_native_bf16, resolve_precision

    dev = torch.device(device)
    paths: dict[str, dict[str, Any]] = {"digitlab_fp32": dict(precision="fp32")}
    if dev.type != "cpu" or cpu_has_native_bf16():
        paths["digitlab_bf16"] = dict(precision="bf16")
    if compile:
        paths["digitlab_compiled"] = dict(precision=resolve_precision("auto", dev), compile=True)
    out = {}
    for name in models:
        built = {k: seed_step(name, data, device=device, **kw) for k, kw in paths.items()}
        rates: dict[str, list[float]] = {"reference": [], **{k: [] for k in paths}}
        for _ in range(repeats):  # in turn, so a noisy neighbour hits every path alike
            rates["reference"].append(reference_throughput(name, data, steps))
            for k, (step, _) in built.items():
                rates[k].append(images_per_second(step, steps, device))
        ref = spread(rates["reference"])
        row: dict = {"reference": ref, "digitlab_bf16": None, "ratio_bf16": None}
        for k in paths:
            row[k] = spread(rates[k])
            row["ratio_" + k.removeprefix("digitlab_")] = row[k]["median"] / ref["median"]
        if "digitlab_bf16" not in paths:
            row["bf16_skipped"] = "no native bf16 on this CPU (emulated bf16 is ~10x slower than fp32)"
        if compile:
            row["compiled_precision"] = paths["digitlab_compiled"]["precision"]
            row["compile_seconds"] = built["digitlab_compiled"][1]
        row["ratio_best"] = max(row["ratio_" + k.removeprefix("digitlab_")] for k in paths)
        row["load_average_after"] = os.getloadavg()
        out[name] = row
    return out


# ---------------------------------------------------------------------------------------------
# 3. inference


@torch.inference_mode()
def inference(data: ImageData, repeats: int, *, quick: bool) -> dict:
    """Batch-1000 throughput (fp32; bf16 where native; channels_last) and single-image latency (fp32) of the default model."""
    from digitlab.config import ModelConfig
    from digitlab.data.loader import normalize
    from digitlab.engine.device import autocast, cpu_has_native_bf16
    from digitlab.models import create_model

    m = ModelConfig()
    kw = {"width": m.width} if m.width is not None else {}
    model = create_model(m.model, num_classes=10, in_channels=1, image_size=28, **kw).eval()
    cpu = torch.device("cpu")
    x = data.test_x[:1000]
    batch_rates = {}
    for precision in ("fp32", "bf16") if cpu_has_native_bf16() else ("fp32",):  # emulated bf16: not worth timing
        mcl = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in torch's type stubs
        rates = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(1 if quick else 5):
                xb = normalize(x, data.mean, data.std).contiguous(memory_format=torch.channels_last)
                with autocast(cpu, precision):
                    mcl(xb)
            rates.append((1 if quick else 5) * len(x) / (time.perf_counter() - t0))
        batch_rates[precision] = spread(rates)
    model = model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # not in torch's stubs
    n = 30 if quick else 300
    lat = []
    for i in range(n + 10):
        t0 = time.perf_counter()
        model(normalize(data.test_x[i % len(data.test_x)][None], data.mean, data.std))  # (1, 1, 28, 28)
        if i >= 10:
            lat.append((time.perf_counter() - t0) * 1000)
    return {
        "model": m.model,
        "batch_1000_images_per_s": batch_rates,
        "single_image_ms": {
            "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)),
            "samples": n,
            "precision": "fp32",
        },
    }


# ---------------------------------------------------------------------------------------------
# the whole benchmark


def run_bench(
    *,
    quick: bool = False,
    repeats: int = 3,
    out_dir: str | Path = "bench",
    data_dir: str | None = None,
    device: str = "cpu",
    compile: bool | None = None,
    cifar: bool = False,
    argv: list[str] | None = None,
    log=print,
) -> dict:
    """Run every section and write ``bench.json`` into ``out_dir``; returns the result dict.

    ``cifar`` adds CIFAR-10's time to 90/93/94% (``cifar_time_to_accuracy``: minutes on a CPU, so not by default).

    ``compile`` (default: on unless ``quick``) adds torch.compile measurements: the fast recipe's time to
    accuracy and whole command with ``--compile``, and a compiled column in the throughput table.
    """
    from digitlab.data import load_dataset
    from digitlab.engine.device import keep_freed_memory
    from digitlab.provenance import provenance

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # What training does on a CPU, set before anything is timed: ours and the reference's under one allocator.
    kept_freed_memory = keep_freed_memory() if torch.device(device).type == "cpu" else False
    repeats = 1 if quick else max(1, repeats)
    compile = not quick if compile is None else compile
    data = load_dataset("mnist", data_dir, download=data_dir is None)
    if quick:
        data = data.subset(2000, 500)
    steps = 3 if quick else 60
    result: dict = {
        "quick": quick,
        "repeats": repeats,
        "device": device,
        "compile": compile,
        "command": "digitlab " + " ".join(argv if argv is not None else sys.argv[1:]),
        "provenance": provenance(),
        "kept_freed_memory": kept_freed_memory,
        "clock": "time to accuracy: first training step to the end of the evaluation that reached it, "
        "data already in memory (TrainResult.history[].elapsed)",
    }

    result["load_average"] = {"start": os.getloadavg()}  # 1/5/15-minute load; above ~2.5 others shared the 2 cores

    def save(section: str | None = None) -> None:  # after every section, so an interrupted run keeps what it measured
        if section:
            result["load_average"][section] = os.getloadavg()
        (out_dir / "bench.json").write_text(json.dumps(result, indent=2))

    log("1/4 time to accuracy")
    result["time_to_accuracy"] = {}
    for preset in ("fast", "fast-99.5"):
        result["time_to_accuracy"][preset] = time_to_accuracy(data, preset, repeats, device=device, quick=quick)
        save(preset)
    if compile:
        result["time_to_accuracy"]["fast --compile"] = time_to_accuracy(
            data, "fast", repeats, device=device, quick=quick, compile=True
        )
        save("fast --compile")
    with tempfile.TemporaryDirectory(prefix="digitlab-bench-cmd-") as tmp:
        args = ["train", "--runs-dir", tmp, "--device", device, "-q"]
        if data_dir:
            args += ["--data-dir", str(data_dir), "--no-download"]
        if quick:
            args += ["--limit-train", "2000", "--limit-test", "500", "--epochs", "1", "--dry-run"]
        result["command_wall"] = command_wall(args, repeats)
        if compile:
            result["command_wall_compile"] = command_wall(args + ["--compile"], repeats, cold_compile_cache=True)
        shutil.rmtree(tmp, ignore_errors=True)
    save("command_wall")

    log("2/4 training throughput vs the seed-style reference")
    result["throughput"] = throughput(
        data, repeats, steps, device=device, compile=compile, models=("cnn",) if quick else SEED_MODELS
    )
    save("throughput")
    log("3/4 inference")
    result["inference"] = inference(data, repeats, quick=quick)
    save("inference")
    log("4/4 memory")
    result["memory"] = {
        "default_train_peak_rss_mb": result["command_wall"]["peak_rss_mb"],
        "bench_process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if torch.cuda.is_available() and device.startswith("cuda"):
        result["memory"]["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    save("memory")
    if cifar:
        log("CIFAR-10 time to accuracy")
        result["cifar10"] = cifar_time_to_accuracy(data_dir, repeats, device=device, quick=quick)
    save()
    return result


def cifar_time_to_accuracy(data_dir: str | None, repeats: int, *, device: str, quick: bool) -> dict:
    """Each of ``CIFAR_PRESETS`` (``--preset cifar-fast-cpu``, then ``cifar-fast``) to 90%, 93% and 94% on
    CIFAR-10's test set, on ``device``.

    ``dataset`` says which files were used ("cifar10 (JPEG q75 copy)" for the JPEG copy); ``load_seconds``
    is the load before the clock (the decode cache's, after the first run).
    """
    from digitlab.data import load_dataset

    t0 = time.perf_counter()
    data = load_dataset("cifar10", data_dir, download=data_dir is None)
    load_seconds = time.perf_counter() - t0
    if quick:
        data = data.subset(2000, 500)
    presets = {
        p: time_to_accuracy(data, p, repeats, device=device, quick=quick, targets=CIFAR_TARGETS) for p in CIFAR_PRESETS
    }
    return {"dataset": data.label, "load_seconds": load_seconds, "presets": presets}
