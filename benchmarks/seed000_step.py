"""Where one training step of seed 000's `cnn` goes, and what each remedy buys (issue 3).

    python benchmarks/seed000_step.py --data-dir ../shared/data/mnist                  # remedies vs the reference
    python benchmarks/seed000_step.py --data-dir ../shared/data/mnist --profile cl     # torch.profiler of a step
    python benchmarks/seed000_step.py --kernels                                        # the convolutions alone

Same model, same Adadelta (lr 1.0), same batch 64 as the seed. The reference is
``digitlab.bench.reference_throughput`` (the seed's per-sample Dataset + DataLoader, fp32, NCHW),
measured in the same process, in turn with the variants, so a noisy neighbour hits all alike.
A variant is remedies joined by '+': ``cl`` (channels_last) or ``nchw``, ``compile`` (torch.compile of
the model, static shapes), ``cstep`` (torch.compile of the optimizer step), ``foreach`` (Adadelta's
foreach implementation), ``fbrand`` (inductor's fallback_random: eager dropout RNG inside the
compiled graph), ``bf16`` (autocast), ``bytedrop`` (digitlab's ``ByteDropout``; without it the seed's
``nn.Dropout``), ``slicepool`` (2x2 max pooling as the maximum of four strided views), ``poolfirst`` (max pool before the
second ReLU). Prints median images/s over ``--windows`` windows of
``--steps`` steps, min-max, and the ratio to the reference median.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from digitlab.bench import reference_throughput
from digitlab.data import load_dataset
from digitlab.data.loader import iterate_batches
from digitlab.engine.train import train_step
from digitlab.models import create_model
from digitlab.models.layers import ByteDropout, as_the_seed_wrote_it, pool_before_relu

BATCH = 64
VARIANTS = [
    "cl",
    "nchw",
    "cl+foreach",
    "cl+cstep",
    "cl+compile",
    "cl+compile+cstep",
    "cl+compile+cstep+fbrand",
    "nchw+compile+cstep",
    "cl+bf16",
    "cl+bf16+bytedrop",
    "cl+bf16+bytedrop+cstep",
    "cl+bf16+bytedrop+cstep+poolfirst",
]


class SlicePool(torch.nn.Module):
    """2x2 max pooling as the maximum of four strided views."""

    def forward(self, x):
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        return torch.maximum(
            torch.maximum(x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2]),
            torch.maximum(x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]),
        )


def _swap(model, opts):
    as_the_seed_wrote_it(model)  # the seed's nn.Dropout and ReLU-then-pool; the variants put digitlab's back
    if "bytedrop" in opts:
        for parent in list(model.modules()):
            for name, m in parent.named_children():
                if type(m) is torch.nn.Dropout:
                    setattr(parent, name, ByteDropout(m.p))
    for parent in list(model.modules()):
        for name, m in parent.named_children():
            if "slicepool" in opts and isinstance(m, torch.nn.MaxPool2d):
                setattr(parent, name, SlicePool())
    if "poolfirst" in opts:  # digitlab's cnn pools before the ReLU; as_the_seed_wrote_it puts the seed's order back
        pool_before_relu(model.features)


def make_step(variant: str, data):
    """A closure that runs one training step of ``cnn`` the way ``variant`` says (warmed up and compiled)."""
    import torch._inductor.config as inductor_config

    opts = set(variant.split("+"))
    inductor_config.fallback_random = "fbrand" in opts  # read when a graph is compiled, i.e. below
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=10, in_channels=1, image_size=28)
    _swap(model, opts)
    cl = "nchw" not in opts
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0, foreach="foreach" in opts)  # the seed's optimizer
    fwd = torch.compile(model, dynamic=False) if "compile" in opts else model
    opt_step = torch.compile(opt.step, dynamic=False) if "cstep" in opts else opt.step
    precision = "bf16" if "bf16" in opts else "fp32"
    gen = torch.Generator().manual_seed(0)

    def batches():
        while True:
            yield from iterate_batches(data.train_x, data.train_y, BATCH, shuffle=True, generator=gen, drop_last=True)

    it = batches()
    model.train()

    def step() -> None:
        xb, yb = next(it)  # (64, 1, 28, 28) uint8
        train_step(
            fwd,
            opt,
            xb,
            yb,
            mean=data.mean,
            std=data.std,
            precision=precision,
            channels_last=cl,
            optimizer_step=opt_step,
        )

    t0 = time.perf_counter()
    for _ in range(3):
        step()
    return step, time.perf_counter() - t0


def remedies(data, variants: list[str], steps: int, windows: int) -> None:
    built = {}
    for v in variants:
        built[v], setup = make_step(v, data)
        print(f"{v}: first 3 steps (incl. compiling) {setup:.1f} s", flush=True)
    rates: dict[str, list[float]] = {"reference": [], **{v: [] for v in variants}}
    for _ in range(windows):
        rates["reference"].append(reference_throughput("cnn", data, steps))
        for v, step in built.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            rates[v].append(BATCH * steps / (time.perf_counter() - t0))
    ref = statistics.median(rates["reference"])
    ceiling = kernels()
    print(f"ceiling (conv2 + fc1 alone) / reference median: x{ceiling / ref:.2f}")
    print(
        f"\n{'variant':28s} {'img/s':>7s}  (min-max)      vs reference   ({windows} windows of {steps} steps, "
        f"{torch.get_num_threads()} threads)"
    )
    for v, r in rates.items():
        med = statistics.median(r)
        print(f"{v:28s} {med:7.0f}  ({min(r):.0f}-{max(r):.0f})  x{med / ref:.2f}")


def profile(data, variant: str) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step, _ = make_step(variant, data)
    for _ in range(5):
        step()
    n = 10
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    print(f"{variant}: {n} steps; divide the times by {n} for one step")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def kernels(repeats: int = 5, n: int = 10) -> float:
    """The convolutions and linear layers of one step alone (fp32, channels_last): the floor under any remedy.

    Returns the images/s that conv2 and fc1 alone allow (conv1, dropout, ReLU, pooling, loss and optimizer free).
    """

    def best_ms(f) -> float:
        for _ in range(2):
            f()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            times.append((time.perf_counter() - t0) / n * 1000)
        return min(times)

    cl = torch.channels_last
    conv = torch.ops.aten.convolution_backward
    rows = []
    for name, c_in, c_out, size, need_input_grad in (
        ("conv1 1->32 @28", 1, 32, 28, False),
        ("conv2 32->64 @26", 32, 64, 26, True),
    ):
        x = torch.randn(BATCH, c_in, size, size).contiguous(memory_format=cl)
        # Weights that require grad, as in training: oneDNN then picks its forward_training kernels.
        w = torch.randn(c_out, c_in, 3, 3).contiguous(memory_format=cl).requires_grad_()
        b = torch.randn(c_out, requires_grad=True)
        y = F.conv2d(x, w, b).detach()
        g = torch.randn_like(y)
        flop = 2 * y.numel() * c_in * 9
        # best_ms calls each lambda at once, inside this iteration: binding the loop variables late is harmless
        rows.append((f"{name} forward", best_ms(lambda: F.conv2d(x, w, b)), flop))  # noqa: B023
        w, b = w.detach(), b.detach()
        if need_input_grad:
            rows.append(
                (
                    f"{name} grad input",
                    best_ms(
                        lambda: conv(g, x, w, [c_out], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, False, False])  # noqa: B023
                    ),
                    flop,
                )
            )
        rows.append(
            (
                f"{name} grad weight",
                best_ms(lambda: conv(g, x, w, [c_out], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [False, True, True])),  # noqa: B023
                flop,
            )
        )
    a, w, gy = torch.randn(BATCH, 9216), torch.randn(128, 9216), torch.randn(BATCH, 128)
    flop = 2 * BATCH * 9216 * 128
    rows.append(("fc1 9216->128 forward", best_ms(lambda: F.linear(a, w)), flop))
    rows.append(("fc1 grad input + weight", best_ms(lambda: (gy @ w, gy.t() @ a)), 2 * flop))
    big = torch.randn(2048, 2048)
    peak = 2 * 2048**3 / best_ms(lambda: big @ big) / 1e6
    total = sum(ms for _, ms, _ in rows)
    big_two = sum(ms for name, ms, _ in rows if not name.startswith("conv1"))
    print(
        f"{'kernel (batch 64)':28s} {'ms':>6s} {'GFLOP/s':>8s}   ({torch.get_num_threads()} threads; "
        f"sgemm 2048^3 reaches {peak:.0f} GFLOP/s)"
    )
    for name, ms, flop in rows:
        print(f"{name:28s} {ms:6.1f} {flop / ms / 1e6:8.0f}")
    print(f"{'sum':28s} {total:6.1f}   -> at most {BATCH / total * 1000:.0f} img/s with everything else free")
    print(f"{'conv2 + fc1 only':28s} {big_two:6.1f}   -> at most {BATCH / big_two * 1000:.0f} img/s")
    return BATCH / big_two * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--variants", nargs="*", default=VARIANTS)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--profile", metavar="VARIANT", help="print the torch.profiler table of this variant")
    ap.add_argument("--kernels", action="store_true", help="time the conv/linear kernels of one step alone")
    args = ap.parse_args()
    if args.kernels:
        kernels()
        return
    data = load_dataset("mnist", args.data_dir, download=args.data_dir is None)
    if args.profile:
        profile(data, args.profile)
    else:
        remedies(data, args.variants, args.steps, args.windows)


if __name__ == "__main__":
    main()
