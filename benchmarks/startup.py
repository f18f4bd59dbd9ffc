"""Start-up time of the `digitlab` command, whole process, as a user's shell sees it.

    python benchmarks/startup.py                     # 5 runs of each command, the digitlab on PATH
    python benchmarks/startup.py --runs 9 --json startup.json
    python benchmarks/startup.py --digitlab "/path/to/other/python -m digitlab"   # another install

Commands: ``--version``, ``--help``, ``train --help``, a usage error (``train --no-such-flag``),
``predict one.png`` (a drawn 7, the shipped model: its ONNX twin), the same with the PyTorch checkpoint
(``--model default.pt``) and with a fresh export to ONNX (``--model model.onnx``; needs the ``onnx`` extra). Each is run ``--runs`` times, interleaved
so a busy neighbour slows all alike; the median and the min-max spread are printed, with
``python -c pass`` (the interpreter alone) as the reference measured in the same run. Each
command is also run once under ``-X importtime`` to say whether it imported torch, and
``predict``'s cold path is split into its parts in a fresh process: the inference modules, the
shipped model's load (its ONNX twin) and first calls, then torch's import and the PyTorch checkpoint's
load and first call (what ``--explain`` or a machine without onnxruntime pays).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "--version": ["--version"],
    "--help": ["--help"],
    "train --help": ["train", "--help"],
    "usage error": ["train", "--no-such-flag"],
    "predict one.png": ["predict", "{image}"],
    "predict --model default.pt one.png": ["predict", "--model", "{pt}", "{image}"],
    "predict --model model.onnx one.png": ["predict", "--model", "{onnx}", "{image}"],
}

# The parts of `digitlab predict one.png` after the interpreter starts, each timed in one fresh process.
PHASES = """
import sys, time, json
t0 = time.perf_counter()
import digitlab.cli
t1 = time.perf_counter()
from digitlab.inference.predictor import Predictor
t2 = time.perf_counter()
p = Predictor.load(None, device="cpu")
t3 = time.perf_counter()
p.predict_many([sys.argv[1]], top_k=3, multi=True, batch_size=256)
t4 = time.perf_counter()
p.predict_many([sys.argv[1]], top_k=3, multi=True, batch_size=256)
t5 = time.perf_counter()
import torch
t6 = time.perf_counter()
q = Predictor.load(None, device="cpu", runtime="torch")
t7 = time.perf_counter()
q.predict_many([sys.argv[1]], top_k=3, multi=True, batch_size=256)
t8 = time.perf_counter()
print(json.dumps({"cli import": t1 - t0, "inference modules import": t2 - t1,
                  "model load (" + type(p.model).__name__ + ")": t3 - t2, "first call": t4 - t3,
                  "second call": t5 - t4, "torch import": t6 - t5, "model load (torch checkpoint)": t7 - t6,
                  "first call (torch)": t8 - t7}))
"""


def draw_seven(path: Path) -> Path:
    """A thick dark 7 on white paper, as a phone photo of a written digit would be after cropping."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (120, 120), 255)
    d = ImageDraw.Draw(img)
    d.line([(25, 25), (95, 25), (50, 100)], fill=20, width=12)
    img.save(path)
    return path


def default_launcher() -> list[str]:
    exe = Path(sys.executable).with_name("digitlab")
    return (
        [str(exe)]
        if exe.exists()
        else [shutil.which("digitlab") or sys.executable, *([] if shutil.which("digitlab") else ["-m", "digitlab"])]
    )


def wall(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one whole process. On a shared machine the CPU
    time is the steadier of the two: it leaves out the time spent waiting for a core."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def imports_torch(launcher: list[str], args: list[str], env: dict) -> bool | None:
    """Whether the command imports torch, from ``-X importtime`` (None when the launcher is not Python)."""
    if Path(launcher[0]).name == "digitlab":  # a console script: run its module under the same Python
        python = Path(launcher[0]).with_name("python")
        launcher = [str(python), "-m", "digitlab"]
    elif "python" not in Path(launcher[0]).name:
        return None
    proc = subprocess.run(
        [launcher[0], "-X", "importtime", *launcher[1:], *args], capture_output=True, text=True, env=env, check=False
    )
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in proc.stderr.splitlines())


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs of each command (default: 5)")
    ap.add_argument("--digitlab", default=None, help="how to launch digitlab (default: the digitlab next to python)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    launcher = shlex.split(args.digitlab) if args.digitlab else default_launcher()
    env = {**os.environ, "COLUMNS": "120"}
    with tempfile.TemporaryDirectory() as tmp:
        image = str(draw_seven(Path(tmp) / "one.png"))
        onnx = str(Path(tmp) / "model.onnx")
        default = str(Path(__file__).resolve().parents[1] / "src" / "digitlab" / "assets" / "default.pt")
        export = [*launcher, "export", default, onnx, "--format", "onnx", "--no-calibrate"]
        commands = dict(COMMANDS)
        if subprocess.run(export, capture_output=True, env=env, check=False).returncode != 0:
            del commands["predict --model model.onnx one.png"]  # no onnx extra here
        cmds = {k: [*launcher, *(a.format(image=image, onnx=onnx, pt=default) for a in v)] for k, v in commands.items()}
        cmds = {"python -c pass (reference)": [sys.executable, "-c", "pass"], **cmds}
        for cmd in cmds.values():  # warm the file cache once, untimed
            wall(cmd, env)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        cpu: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(args.runs):
            for k, cmd in cmds.items():
                w, c = wall(cmd, env)
                times[k].append(w)
                cpu[k].append(c)
        torch_loaded = {
            k: imports_torch(launcher, [a.format(image=image, onnx=onnx, pt=default) for a in v], env)
            for k, v in commands.items()
        }
        python = launcher[0] if "python" in Path(launcher[0]).name else str(Path(launcher[0]).with_name("python"))
        proc = subprocess.run([python, "-c", PHASES, image], capture_output=True, text=True, env=env, check=False)
        phases = json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-500:]}

    ref = statistics.median(times["python -c pass (reference)"])
    result = {
        "launcher": launcher,
        "runs": args.runs,
        "seconds": {k: spread(v) for k, v in times.items()},
        "cpu_seconds": {k: spread(v) for k, v in cpu.items()},
        "load_average": os.getloadavg(),
    }
    result["imports_torch"] = torch_loaded
    result["predict_phases_seconds"] = phases
    print(f"{'command':<28} {'wall':>7} {'min-max':>13} {'x python':>8} {'CPU':>7} {'min-max':>13}  torch")
    for k, v in times.items():
        s, c = spread(v), spread(cpu[k])
        loaded = torch_loaded.get(k)
        mark = "" if loaded is None else ("yes" if loaded else "no")
        print(
            f"{k:<28} {s['median']:>6.3f}s {s['min']:>5.3f}-{s['max']:.3f}s {s['median'] / ref:>7.1f}x "
            f"{c['median']:>6.3f}s {c['min']:>5.3f}-{c['max']:.3f}s  {mark}"
        )
    print(f"load average while measuring: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("predict one.png, in one process:", ", ".join(f"{k} {v:.3f}s" for k, v in phases.items() if k != "error"))
    if "error" in phases:
        print("phases failed:", phases["error"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
