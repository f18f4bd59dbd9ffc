"""`digitlab bench --quick` end to end: every section present, every number positive."""

from __future__ import annotations

import json
import platform
import sys

from digitlab.cli import main


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and x > 0


def test_bench_quick_writes_all_sections(mnist_dir, tmp_path, capsys):
    rc = main(["bench", "--quick", "--out", str(tmp_path), "--data-dir", str(mnist_dir)])
    assert rc == 0
    assert "digitlab bench" in capsys.readouterr().out
    r = json.loads((tmp_path / "bench.json").read_text())
    for key in ("provenance", "time_to_accuracy", "command_wall", "throughput", "inference", "memory"):
        assert key in r, key
    for key in ("git_commit", "torch", "cpu", "torch_threads", "time"):
        assert key in r["provenance"]
    assert r["command"].startswith("digitlab")
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert r["kept_freed_memory"] is glibc  # every measurement under the allocator setting training uses

    for preset in ("fast", "fast-99.5"):
        t = r["time_to_accuracy"][preset]
        assert _positive(t["train_seconds"]["median"]) and 0 <= t["final_acc"]["median"] <= 1
        assert t["runs"][0]["history"]
    assert _positive(r["command_wall"]["wall_seconds"]["median"])
    assert r["compile"] is False and "command_wall_compile" not in r  # --quick stays quick: nothing compiled
    cnn = r["throughput"]["cnn"]
    native_bf16 = r["provenance"]["cpu_native_bf16"]
    for path in ("reference", "digitlab_fp32") + (("digitlab_bf16",) if native_bf16 else ()):
        s = cnn[path]
        assert _positive(s["median"]) and s["min"] <= s["median"] <= s["max"]
    assert _positive(cnn["ratio_fp32"]) and "digitlab_compiled" not in cnn
    assert _positive(cnn["ratio_bf16"]) if native_bf16 else cnn["bf16_skipped"]
    inf = r["inference"]
    assert all(_positive(s["median"]) for s in inf["batch_1000_images_per_s"].values())
    assert _positive(inf["single_image_ms"]["p50"]) and inf["single_image_ms"]["p99"] >= inf["single_image_ms"]["p50"]
    assert _positive(r["memory"]["default_train_peak_rss_mb"]["median"])


def test_throughput_compiled_column(cpp_compiler, tiny_data):
    """The compiled path of the throughput table, on tiny data with the quickest model to compile."""
    from digitlab.bench import throughput
    from digitlab.cli.bench import render
    from digitlab.cli.output import Console

    row = throughput(tiny_data(n_train=200), repeats=1, steps=2, device="cpu", models=("mlp",), compile=True)["mlp"]
    assert _positive(row["digitlab_compiled"]["median"]) and _positive(row["ratio_compiled"])
    assert row["compile_seconds"] > 0 and row["compiled_precision"] in ("fp32", "bf16")
    assert row["ratio_best"] >= row["ratio_fp32"]
    result = {
        "quick": True,
        "repeats": 1,
        "provenance": {"cpu": "x", "torch_threads": 1},
        "time_to_accuracy": {},
        "command_wall": {
            "wall_seconds": {"median": 1, "min": 1, "max": 1},
            "peak_rss_mb": {"median": 1, "min": 1, "max": 1},
        },
        "throughput": {"mlp": row},
        "inference": {"model": "fast", "batch_1000_images_per_s": {}, "single_image_ms": {"p50": 1.0, "p99": 1.0}},
    }
    console = Console(record=True, width=200)
    console.print(render(result))
    lines = console.export_text().splitlines()

    def shows(measure: str, value: str) -> bool:  # one line of the table holds the measure and its value
        return any(measure in line and value in line for line in lines)

    def spread(s: dict) -> str:
        return f"{s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f})"

    # the table shows every column that was measured, with its value
    assert shows("mlp: reference img/s", spread(row["reference"]))
    assert shows(f"mlp: digitlab fp32 img/s (x{row['ratio_fp32']:.2f})", spread(row["digitlab_fp32"]))
    compiled = f"mlp: digitlab compiled {row['compiled_precision']} img/s (x{row['ratio_compiled']:.2f})"
    assert shows(compiled, spread(row["digitlab_compiled"]))
    assert shows("mlp: compile seconds", f"{row['compile_seconds']:.1f} s")
    if row.get("digitlab_bf16") is not None:
        assert shows(f"mlp: digitlab bf16 img/s (x{row['ratio_bf16']:.2f})", spread(row["digitlab_bf16"]))
    else:
        assert shows("mlp: digitlab bf16", "skipped: no native bf16 on this CPU")
    assert shows("`digitlab train` wall time", "1.0 s (1.0-1.0)")
    assert shows("fast single image p50 / p99", "1.00 / 1.00 ms")


def test_bench_times_the_engines_own_step(monkeypatch, tiny_data):
    """The throughput table measures ``engine.train.train_step`` itself, not a copy of it."""
    from digitlab.bench import images_per_second, seed_step
    from digitlab.engine import train as train_mod

    calls = []
    real = train_mod.train_step

    def spy(*a, **k):
        calls.append(k["precision"])
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "train_step", spy)
    step, _ = seed_step("mlp", tiny_data(n_train=200), precision="fp32", batch_size=32)
    assert _positive(images_per_second(step, 3)) and calls == ["fp32"] * 5  # 2 warm-up steps, 3 timed


def test_quick_render_says_it_is_a_smoke_run():
    """`bench --quick`'s accuracy (a few batches of a subset) is labelled a smoke run, not a result."""
    from digitlab.cli.bench import render
    from digitlab.cli.output import Console

    spread = {"median": 0.11, "min": 0.11, "max": 0.11, "values": [0.11]}
    result = {
        "quick": True,
        "repeats": 1,
        "provenance": {"cpu": "x", "torch_threads": 1},
        "time_to_accuracy": {
            "fast": {
                "final_acc": spread,
                "train_seconds": spread,
                "runs": [{}],
                **{f"reached_{t}": 0 for t in ("0.990", "0.995")},
                **{f"time_to_{t}": None for t in ("0.990", "0.995")},
            }
        },
        "command_wall": {"wall_seconds": spread, "peak_rss_mb": spread},
        "throughput": {},
        "inference": {"model": "fast", "batch_1000_images_per_s": {}, "single_image_ms": {"p50": 1.0, "p99": 1.0}},
    }
    console = Console(record=True, width=200)
    console.print(render(result))
    text = console.export_text()
    assert "final test accuracy (smoke run, not a result)" in text
    assert "its numbers are not measurements" in " ".join(text.split())  # the caption, wrapped to the table
    console = Console(record=True, width=200)
    console.print(render(result | {"quick": False}))
    assert "smoke" not in console.export_text()
