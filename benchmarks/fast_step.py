"""One bf16 training step of the default `fast` net in its layer orders, interleaved in one process (issue 3).

    python benchmarks/fast_step.py                       # width 16, batch 128, as the default recipe trains
    python benchmarks/fast_step.py --width 32 --batch 128

Orders: ``late`` (format-1 checkpoints as written: conv, BN, ReLU, max pool), ``swap`` (the same
model with the pool before the ReLU, exact: how format-1 checkpoints run) and ``early``
(``pool_early=True``, the default from format 2: conv, max pool, BN, ReLU). The models alternate
in blocks of ``--steps`` steps, so a noisy neighbour hits all alike; prints the median ms per step
over the timed blocks and the speed-up against ``late``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from digitlab.data.loader import random_shift
from digitlab.engine.device import resolve_precision
from digitlab.engine.train import train_step
from digitlab.models import create_model
from digitlab.models.layers import as_the_seed_wrote_it


def build(order: str, width: int) -> torch.nn.Module:
    if order == "early":
        return create_model("fast", width=width)
    model = create_model("fast", width=width, pool_early=False)  # runs pool before ReLU
    return as_the_seed_wrote_it(model) if order == "late" else model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="steps per block")
    ap.add_argument("--blocks", type=int, default=10, help="timed blocks per order (after 2 warm-up blocks)")
    ap.add_argument("--precision", default="auto", help="auto (bf16 where the CPU has it), bf16 or fp32")
    args = ap.parse_args()

    torch.manual_seed(0)
    precision = resolve_precision(args.precision, torch.device("cpu"))
    orders = ("late", "swap", "early")
    models = {}
    for o in orders:
        m = build(o, args.width).to(memory_format=torch.channels_last).train()
        models[o] = (m, torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4))
    n = args.batch * args.steps
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)  # the cost does not depend on the pixels
    y = torch.randint(0, 10, (n,))
    gen = torch.Generator().manual_seed(0)

    def step(model, opt, i: int) -> None:
        sl = slice(i * args.batch, (i + 1) * args.batch)
        train_step(
            model,
            opt,
            random_shift(x[sl], gen),
            y[sl],
            mean=(0.1307,),
            std=(0.3081,),
            precision=precision,
            channels_last=True,
            label_smoothing=0.1,
        )

    times: dict[str, list[float]] = {o: [] for o in orders}
    for block in range(args.blocks + 2):
        for o in orders:
            t0 = time.perf_counter()
            for i in range(args.steps):
                step(*models[o], i)
            if block >= 2:
                times[o].append((time.perf_counter() - t0) * 1000 / args.steps)
    base = statistics.median(times["late"])
    print(f"fast width {args.width}, batch {args.batch}, {precision}, {torch.get_num_threads()} threads")
    for o in orders:
        med = statistics.median(times[o])
        print(f"{o:6s} {med:6.2f} ms/step ({min(times[o]):.2f}-{max(times[o]):.2f})  x{base / med:.2f}")


if __name__ == "__main__":
    main()
