"""CPU training steps with glibc's default malloc against ``keep_freed_memory`` (engine/device.py).

    python benchmarks/malloc_step.py                 # fast-cifar-cpu at 1000, fast at 128 (the default recipe) and 512
    python benchmarks/malloc_step.py --rounds 5 --steps 8 --json out.json

Each measurement is a fresh process (the malloc setting is process-wide and cannot be undone), the
two settings alternate round by round so a noisy neighbour hits both alike; prints per setting the
median seconds per step over the rounds, the page faults and kernel time per step, the peak RSS, and
the ratio default / kept. The step is ``train_step``: the one training, bench and the CLI run.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

# case: (model, channels, image size, batch, optimizer)
CASES = {
    "fast-cifar-cpu": ("fast-cifar-cpu", 3, 32, 1000, "muon"),  # --preset cifar-fast-cpu
    "fast": ("fast", 1, 28, 128, "sgd"),  # the default recipe (digitlab train)
    "fast-512": ("fast", 1, 28, 512, "sgd"),
}


def child(case: str, keep: bool, steps: int) -> dict:
    """Time ``steps`` training steps (after two warm-up steps) in this process."""
    import torch

    from digitlab.config import TrainConfig
    from digitlab.engine.device import keep_freed_memory
    from digitlab.engine.optim import build_optimizer
    from digitlab.engine.train import train_step
    from digitlab.models import create_model

    applied = keep_freed_memory() if keep else False
    model_name, channels, size, batch, optimizer = CASES[case]
    torch.manual_seed(0)
    model = create_model(model_name, in_channels=channels, image_size=size).to(memory_format=torch.channels_last)
    opt = build_optimizer(model, TrainConfig(optimizer=optimizer, lr=0.01, momentum=0.6, batch_size=batch))
    xb = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8)
    yb = torch.randint(0, 10, (batch,))
    norm = ((0.5,) * channels, (0.25,) * channels)

    def step() -> None:
        train_step(model, opt, xb, yb, mean=norm[0], std=norm[1], precision="fp32", label_smoothing=0.2)

    for _ in range(2):
        step()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    seconds, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return {
        "applied": applied,
        "seconds_per_step": seconds / steps,
        "faults_per_step": (r1.ru_minflt - r0.ru_minflt) / steps,
        "kernel_s_per_step": (r1.ru_stime - r0.ru_stime) / steps,
        "peak_rss_mb": r1.ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per process")
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--json", help="write the raw measurements here")
    ap.add_argument("--child", nargs=3, metavar=("CASE", "KEEP", "STEPS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1] == "1", int(args.child[2]))))
        return
    raw: dict = {}
    for name in args.cases:
        for _ in range(args.rounds):
            for keep in (False, True):
                cmd = [sys.executable, __file__, "--child", name, str(int(keep)), str(args.steps)]
                out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                raw.setdefault(name, {}).setdefault("kept" if keep else "default", []).append(out)
        rows = raw[name]
        med = {k: {f: statistics.median(r[f] for r in v) for f in v[0] if f != "applied"} for k, v in rows.items()}
        for k, m in med.items():
            print(
                f"{name:15s} {k:8s} {m['seconds_per_step']:.3f} s/step  {m['faults_per_step']:>9,.0f} faults/step  "
                f"{m['kernel_s_per_step']:.3f} s kernel/step  peak {m['peak_rss_mb']:,.0f} MB"
            )
        ratio = med["default"]["seconds_per_step"] / med["kept"]["seconds_per_step"]
        print(f"{name:15s} default / kept: {ratio:.2f}x  (applied: {all(r['applied'] for r in rows['kept'])})")
        raw[name]["ratio"] = ratio
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
