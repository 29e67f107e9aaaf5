"""scripts/bench.py runs end to end on CPU and writes positive throughputs and ratios (a smoke test, ~10 s)."""

from __future__ import annotations

import importlib.util
import json
import sys

from conftest import REPO


def load_bench():
    spec = importlib.util.spec_from_file_location("clipcl_bench", REPO / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_bench_smoke_on_cpu(tmp_path, capsys):
    bench = load_bench()
    out = tmp_path / "bench.json"
    result = bench.main(
        [
            "--device",
            "cpu",
            "--methods",
            "finetune",
            "--classes",
            "4",
            "--batch-size",
            "8",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--eval-images",
            "16",
            "--probe-images",
            "8",
            "--eval-repeats",
            "1",
            "--jpegs",
            "8",
            "--workers",
            "0",
            "--data-batches",
            "2",
            "--json",
            str(out),
        ]
    )
    written = json.loads(out.read_text())
    assert written["rows"] == json.loads(json.dumps(result["rows"]))
    rows = {(row["section"], row["name"]): row for row in written["rows"]}

    raw, finetune = rows[("train", "raw open_clip loop")], rows[("train", "finetune")]
    assert rows[("train", "finetune [train_step only]")]["ratio"] > 0
    assert raw["images_per_s"] > 0 and raw["ratio"] is None  # the baseline of its section
    assert finetune["images_per_s"] > 0 and finetune["ratio"] > 0 and finetune["baseline"] == raw["name"]
    assert finetune["timed_steps"] == 2 and finetune["peak_rss_mib"] > 0

    evaluator = rows[("eval", "Evaluator (stage + 2 probes)")]
    assert rows[("eval", "raw encode_image")]["images_per_s"] > 0
    assert evaluator["images_per_s"] > 0 and evaluator["ratio"] > 0
    assert evaluator["target_met"] is None  # GPU targets are not judged on CPU

    data = [row for row in written["rows"] if row["section"] == "data"]
    assert data and all(row["images_per_s"] > 0 and row["ratio"] > 0 for row in data)
    assert all(row["baseline"] == "runner finetune step" for row in data)

    assert written["skipped"] == []
    assert written["meta"]["device"] == "cpu" and written["meta"]["precision"] == "fp32"
    printed = capsys.readouterr().out
    assert "## train step" in printed and "## evaluation" in printed and "## data pipeline" in printed


def test_bench_zscl_rows_with_jpeg_references(tmp_path):
    """ZSCL with its reference images as JPEG files on disk, drawn on the training thread and through the
    trainer's auxiliary stream: both rows run and are compared with ZSCL's in-memory reference."""
    bench = load_bench()
    bench.REFERENCE_JPEGS = 12
    result = bench.main(
        [
            "--device",
            "cpu",
            "--methods",
            "zscl",
            "--classes",
            "4",
            "--batch-size",
            "4",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--workers",
            "1",
            "--sections",
            "train",
        ]
    )
    rows = {row["name"]: row for row in result["rows"]}
    synchronous, stream = (
        rows["zscl [JPEG reference, synchronous draws]"],
        rows["zscl [JPEG reference, stream, 1 workers]"],
    )
    for row in (rows["zscl"], synchronous, stream):
        assert row["images_per_s"] > 0 and row["timed_steps"] == 2
    assert synchronous["step_time_vs_zscl"] > 0 and stream["step_time_vs_zscl"] > 0
    assert "12 JPEGs" in stream["note"] and stream["target"].startswith("step <= 1.3x zscl")
    assert result["skipped"] == []
