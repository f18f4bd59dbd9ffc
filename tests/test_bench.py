"""`digitlab bench --quick` end to end: every section present, every number positive."""

from __future__ import annotations

import json

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

    for preset in ("fast", "fast-99.5"):
        t = r["time_to_accuracy"][preset]
        assert _positive(t["train_seconds"]["median"]) and 0 <= t["final_acc"]["median"] <= 1
        assert t["runs"][0]["history"]
    assert _positive(r["command_wall"]["wall_seconds"]["median"])
    cnn = r["throughput"]["cnn"]
    for path in ("reference", "digitlab_fp32", "digitlab_bf16"):
        s = cnn[path]
        assert _positive(s["median"]) and s["min"] <= s["median"] <= s["max"]
    assert _positive(cnn["ratio_bf16"]) and _positive(cnn["ratio_fp32"])
    inf = r["inference"]
    assert all(_positive(s["median"]) for s in inf["batch_1000_images_per_s"].values())
    assert _positive(inf["single_image_ms"]["p50"]) and inf["single_image_ms"]["p99"] >= inf["single_image_ms"]["p50"]
    assert _positive(r["memory"]["default_train_peak_rss_mb"]["median"])
