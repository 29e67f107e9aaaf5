"""A fixed set of run folders for the report's golden test: the synthetic protocol (probes, deltas),
MTIL (zero-shot row, Transfer / Avg / Last) and CIL (accuracy on all classes seen so far), two
methods x two seeds each plus a swept option, an unfinished run and accuracy matrices. Every number is
fixed here, so the report's files are too (``tests/golden/report_<protocol>/``)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

PROTOCOLS = ("synthetic", "mtil", "cil")
STAGES = ("T1", "T2", "T3")


def _config(protocol: str, method: str, seed: int, alpha: float | None) -> dict:
    method_cfg = {"_target_": f"clipcl_runner.methods.{method}.X", "name": method}
    if alpha is not None:
        method_cfg["alpha"] = alpha
    tasks = {"synthetic": "synthetic_task_sequence", "mtil": "mtil_sequence", "cil": "class_incremental"}[protocol]
    return {
        "seed": seed,
        "part": "whole",
        "method": method_cfg,
        "tasks": {"_target_": f"clipcl_runner.data.tasks.{tasks}", "num_stages": 3},
        "logger": {"group": "sweep"},
        "paths": {"output_dir": "${oc.env:CLIPCL_OUTPUTS,./outputs}"},
    }


def _rows(protocol: str, base: float, seed: int) -> list[dict]:
    rows = []
    for stage in range(4):
        row = {"stage": stage, "stage_name": "zero-shot" if stage == 0 else STAGES[stage - 1]}
        for i, name in enumerate(STAGES):
            row[f"task/{name}/acc"] = round(base + 7.5 * stage - 3.0 * i + seed, 2)
        if protocol == "synthetic":
            row["zs/colour/acc"] = 98.0 - 4.0 * stage - seed
            row["ret/heldout/i2t_r1"] = 40.0 - 2.5 * stage + seed
            row["ret/heldout/t2i_r1"] = 35.0 - 1.5 * stage
        if protocol == "cil" and stage:
            row["cil/acc"] = round(base + 5.0 - 4.0 * stage + seed, 2)
        if stage:
            row["train/loss"] = round(1.0 / stage, 4)
        rows.append(row)
    return rows


def _summary(protocol: str, base: float, seed: int, method: str) -> dict:
    ut = round(base + 10.0 + seed, 3)
    summary = {
        "ut_acc": ut,
        "bwt": round(-(70.0 - ut) / 2, 3),
        "bwt_paper": round(-(70.0 - ut) / 3, 3),
        "forgetting": round((70.0 - ut) / 2, 3),
        "transfer": round(base - 2.0, 3),
        "avg": round(ut - 1.25, 3),
        "last": round(ut - 0.5, 3),
        "stages": 3,
    }
    if protocol == "synthetic":
        summary.update(
            {
                "ret/heldout/i2t_r1": 32.5 + seed,
                "delta/ret/heldout/i2t_r1": -7.5 if method == "finetune" else -2.0,
                "delta/ret/heldout/t2i_r1": -4.5,
                "zs/colour/acc": 86.0 - seed,
                "delta/zs/colour/acc": -12.0 + seed,
                "delta/zs/colour_shape/acc": -1.0,
            }
        )
    if protocol == "mtil":
        summary.update({"zero_shot_transfer": 44.0, "zero_shot_avg": 45.5})
    if protocol == "cil":
        summary.update({"cil_avg": round(base + 1.0 + seed, 3), "cil_last": round(base - 3.0 + seed, 3)})
    return summary


def make_protocol_runs(root: Path, protocol: str) -> Path:
    """``root/<protocol>/``: a sweep folder in Hydra's layout, returned."""
    sweep = root / protocol
    jobs = [
        ("finetune", 0, None, 50.0),
        ("finetune", 1, None, 50.0),
        ("lwf", 0, 0.5, 58.0),
        ("lwf", 1, 0.5, 58.0),
        ("lwf", 0, 1.0, 61.0),
        ("lwf", 1, 1.0, 61.0),
    ]
    for num, (method, seed, alpha, base) in enumerate(jobs):
        run = sweep / f"{num}_{method}_s{seed}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(_config(protocol, method, seed, alpha)))
        overrides = [f"method={method}", f"seed={seed}", "logger=none", "trainer.progress=false"]
        if alpha is not None:
            overrides.append(f"method.alpha={alpha}")
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        rows = _rows(protocol, base, seed)
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / "summary.json").write_text(json.dumps(_summary(protocol, base, seed, method), indent=2, sort_keys=True))
        header = "," + ",".join(STAGES) + "\n"
        lines = [f"{r['stage_name']}," + ",".join(repr(r[f"task/{s}/acc"]) for s in STAGES) for r in rows]
        (run / "accuracy_matrix.csv").write_text(header + "\n".join(lines) + "\n")
    crashed = sweep / f"{len(jobs)}_finetune_s2"
    (crashed / ".hydra").mkdir(parents=True)
    (crashed / ".hydra" / "config.yaml").write_text(yaml.safe_dump(_config(protocol, "finetune", 2, None)))
    (crashed / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["method=finetune", "seed=2"]))
    (crashed / "metrics.jsonl").write_text(json.dumps(_rows(protocol, 50.0, 2)[0]) + "\n")
    return sweep


def report_texts(sweep: Path, out: Path) -> dict[str, str]:
    """The report's text files for ``sweep``, with the folder paths made relative to ``sweep``."""
    from clipcl_runner.report import write_report

    write_report([sweep], out)
    texts = {}
    for name in ("report.md", "summary.csv", "runs.csv", "summary.tex"):
        text = (out / name).read_text(encoding="utf-8")
        texts[name] = text.replace(str(sweep.resolve()), "<sweep>").replace(str(sweep), "<sweep>")
    return texts


if __name__ == "__main__":  # regenerate the golden files: python tests/report_runs.py
    import tempfile

    golden = Path(__file__).parent / "golden"
    with tempfile.TemporaryDirectory() as tmp:
        for protocol in PROTOCOLS:
            sweep = make_protocol_runs(Path(tmp), protocol)
            for name, text in report_texts(sweep, Path(tmp) / f"out_{protocol}").items():
                target = golden / f"report_{protocol}" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
                print(target)
