"""The seeds' way of training, for comparison: per-sample Dataset + DataLoader(batch 64), fp32.

Usage: python benchmarks/reference_loop.py [model] [steps] [data_dir]
Prints images/s of the reference loop and of digitlab's path (fp32 and bf16), measured back to back.
The implementation lives in digitlab.bench so that `digitlab bench` measures the same loop.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    from digitlab.bench import fast_throughput, reference_throughput
    from digitlab.data import load_dataset

    model = argv[0] if argv else "cnn"
    steps = int(argv[1]) if len(argv) > 1 else 60
    data = load_dataset("mnist", argv[2] if len(argv) > 2 else None, download=len(argv) <= 2)
    ref = reference_throughput(model, data, steps)
    f32 = fast_throughput(model, data, steps, precision="fp32")
    b16 = fast_throughput(model, data, steps, precision="bf16")
    print(
        f"{model}: reference {ref:.0f} img/s; digitlab fp32 {f32:.0f} (x{f32 / ref:.2f}), bf16 {b16:.0f} (x{b16 / ref:.2f})"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
