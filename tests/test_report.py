"""clipcl-report on a hand-made sweep folder: finding runs, missing runs, mean/std/n over
seeds, the Markdown/LaTeX tables, the written files and the CLI's exit codes."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pandas as pd
import pytest
import yaml

from clipcl_runner import report

STAGES = ["zero-shot", "T1", "T2", "T3"]
# method -> seed -> (ut_acc, delta i2t R@1); every other summary value is derived from these
VALUES = {
    "finetune": {0: (50.0, -26.0), 1: (52.0, -24.0), 2: (57.0, -29.0)},
    "vr_lwf": {0: (60.0, -6.0), 1: (61.5, -5.0), 2: (62.5, -7.5)},
}


def make_run(folder: Path, method: str, seed: int, values: tuple[float, float] | None,
             extra_overrides: tuple[str, ...] = (), alpha: float | None = None) -> Path:
    """A run folder as the runner writes it; ``values=None`` leaves it unfinished (no summary.json)."""
    (folder / ".hydra").mkdir(parents=True)
    method_cfg = {"_target_": f"clipcl_runner.methods.{method}.X", "name": method}
    if alpha is not None:
        method_cfg["alpha"] = alpha
    config = {
        "seed": seed, "part": "whole", "method": method_cfg,
        "tasks": {"_target_": "clipcl_runner.data.synthetic.synthetic_task_sequence", "num_stages": 3},
        "logger": {"group": "sweep", "tags": ["test"]},
        "paths": {"output_dir": "${oc.env:CLIPCL_OUTPUTS,./outputs}"},  # left unresolved, as Hydra saves it
    }
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    overrides = [f"method={method}", f"seed={seed}", "experiment=synthetic_test", "logger=none",
                 "trainer.progress=false", f"hydra.job.num={seed}", *extra_overrides]
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))

    ut_acc, d_i2t = values if values is not None else (40.0, -10.0)
    i2t_zero_shot = 38.0
    rows = []
    for stage, name in enumerate(STAGES):
        frac = stage / 3
        row = {"stage": stage, "stage_name": name,
               **{f"task/{t}/acc": 30.0 + 10 * stage for t in STAGES[1:]},
               "zs/colour/acc": 98.0 - 10 * frac,
               "ret/heldout/i2t_r1": i2t_zero_shot + d_i2t * frac + seed}
        if stage:
            row["train/loss"] = 1.0 / stage
        rows.append(row)
    if values is None:
        rows = rows[:2]  # crashed after T1
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if values is not None:
        summary = {"ut_acc": ut_acc, "bwt": -(60.0 - ut_acc), "forgetting": 60.0 - ut_acc,
                   "a_acc": ut_acc / 2, "stages": 3, "transfer": None,
                   "ret/heldout/i2t_r1": i2t_zero_shot + d_i2t,
                   "delta/ret/heldout/i2t_r1": d_i2t, "delta/ret/heldout/t2i_r1": d_i2t / 2,
                   "zs/colour/acc": 88.0, "delta/zs/colour/acc": -10.0 - seed,
                   "delta/zs/colour_shape/acc": -1.0}
        (folder / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    pd.DataFrame([[1.0]], index=["zero-shot"], columns=["T1"]).to_csv(folder / "accuracy_matrix.csv")
    return folder


@pytest.fixture
def sweep(tmp_path) -> Path:
    """2 methods x 3 finished seeds + 1 unfinished run, in Hydra's multirun layout."""
    root = tmp_path / "multirun" / "2026-11-28_21-00-00"
    job = 0
    for method, seeds in VALUES.items():
        for seed, values in seeds.items():
            make_run(root / f"{job}_{method}_s{seed}", method, seed, values)
            job += 1
    make_run(root / f"{job}_lwf_s0", "lwf", 0, None)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_find_runs_walks_a_sweep_and_dedupes(sweep):
    runs = report.find_runs([sweep])
    assert len(runs) == 7
    assert [r.name for r in runs][:2] == ["0_finetune_s0", "1_finetune_s1"]
    # a run folder given directly, twice, plus its sweep: still 7, sorted
    assert report.find_runs([sweep / "6_lwf_s0", sweep, sweep / "6_lwf_s0"]) == runs
    assert report.find_runs([sweep / "0_finetune_s0"]) == [sweep / "0_finetune_s0"]
    with pytest.raises(FileNotFoundError):
        report.find_runs([sweep / "nope"])


def test_load_runs_separates_finished_and_missing(sweep):
    runs, missing = report.load_runs(report.find_runs([sweep]))
    assert len(runs) == 6
    assert sorted(runs["method"].unique()) == ["finetune", "vr_lwf"]
    assert sorted(runs["seed"].tolist()) == [0, 0, 1, 1, 2, 2]
    assert missing == [{"run": str(sweep / "6_lwf_s0"), "method": "lwf", "seed": 0,
                        "reason": "no summary.json (unfinished or failed)"}]
    # the experiment override is a column; seed/method/hydra/logger/trainer.progress are not
    assert "experiment" in runs.columns and set(runs["experiment"]) == {"synthetic_test"}
    for dropped in ("hydra.job.num", "logger", "trainer.progress"):
        assert dropped not in runs.columns
    row = runs.set_index("run").loc[str(sweep / "1_finetune_s1")]
    assert row["ut_acc"] == 52.0 and row["delta/ret/heldout/i2t_r1"] == -24.0
    assert pd.isna(row["transfer"])  # null in summary.json -> NaN


def test_unreadable_summary_is_reported(sweep):
    (sweep / "0_finetune_s0" / "summary.json").write_text("{not json")
    runs, missing = report.load_runs(report.find_runs([sweep]))
    assert len(runs) == 5
    bad = [m for m in missing if m["run"].endswith("0_finetune_s0")]
    assert len(bad) == 1 and bad[0]["reason"].startswith("unreadable: ")
    assert bad[0]["method"] == "finetune" and bad[0]["seed"] == 0


def test_aggregate_mean_std_n_by_hand(sweep):
    runs, _ = report.load_runs(report.find_runs([sweep]))
    agg = report.aggregate(runs, ["ut_acc", "delta/ret/heldout/i2t_r1"]).set_index("method")
    for method, seeds in VALUES.items():
        ut = [v[0] for v in seeds.values()]
        d = [v[1] for v in seeds.values()]
        assert agg.loc[method, "n"] == 3
        assert agg.loc[method, "seeds"] == "0,1,2"
        assert agg.loc[method, "ut_acc/mean"] == pytest.approx(statistics.mean(ut))
        assert agg.loc[method, "ut_acc/std"] == pytest.approx(statistics.stdev(ut))  # ddof=1
        assert agg.loc[method, "delta/ret/heldout/i2t_r1/mean"] == pytest.approx(statistics.mean(d))
        assert agg.loc[method, "delta/ret/heldout/i2t_r1/std"] == pytest.approx(statistics.stdev(d))
    # hand values: finetune ut_acc 53.0 ± 3.61, vr_lwf 61.33 ± 1.26
    assert agg.loc["finetune", "ut_acc/mean"] == pytest.approx(53.0)
    assert agg.loc["finetune", "ut_acc/std"] == pytest.approx(13 ** 0.5)
    with pytest.raises(KeyError, match="unknown metric"):
        report.aggregate(runs, ["no_such_metric"])


def test_missing_seed_shows_as_n2_and_single_seed_has_nan_std(sweep):
    (sweep / "4_vr_lwf_s1" / "summary.json").unlink()
    runs, missing = report.load_runs(report.find_runs([sweep]))
    assert len(runs) == 5 and len(missing) == 2
    agg = report.aggregate(runs, ["ut_acc"]).set_index("method")
    assert agg.loc["vr_lwf", "n"] == 2 and agg.loc["finetune", "n"] == 3
    assert agg.loc["vr_lwf", "seeds"] == "0,2"
    assert agg.loc["vr_lwf", "ut_acc/mean"] == pytest.approx((60.0 + 62.5) / 2)
    table = report.comparison_table(report.aggregate(runs))
    vr_row = next(line for line in table.splitlines() if line.startswith("| vr_lwf"))
    assert vr_row.rstrip(" |").endswith("2")  # the n column

    one = report.aggregate(runs[runs["seed"] == 0], ["ut_acc"]).set_index("method")
    assert (one["n"] == 1).all() and one["ut_acc/std"].isna().all()
    single = report.comparison_table(report.aggregate(runs[runs["seed"] == 0]), ["ut_acc"])
    assert "±" not in single and "| finetune | 50.0 | 1 |" in single


def test_comparison_table_markdown(sweep):
    runs, _ = report.load_runs(report.find_runs([sweep]))
    table = report.comparison_table(report.aggregate(runs))
    lines = table.splitlines()
    assert lines[0] == ("| method | final mean task acc | Δ i2t R@1 | Δ t2i R@1 | Δ colour "
                        "| Δ colour+shape | n |")
    assert len(lines) == 4  # header, rule, 2 methods
    # finetune: ut 53.0 ± 3.6; Δ i2t -26.3 ± 2.5; Δ t2i -13.2 ± 1.3; Δ colour -11.0 ± 1.0
    assert "| finetune | 53.0 ± 3.6 | -26.3 ± 2.5 | -13.2 ± 1.3 | -11.0 ± 1.0 | -1.0 ± 0.0 | 3 |" in lines
    assert "| vr_lwf | 61.3 ± 1.3 | -6.2 ± 1.3 | -3.1 ± 0.6 | -11.0 ± 1.0 | -1.0 ± 0.0 | 3 |" in lines
    custom = report.comparison_table(report.aggregate(runs), ["bwt"], {"bwt": "BWT (pts)"})
    assert custom.splitlines()[0] == "| method | BWT (pts) | n |"
    assert "| finetune | -7.0 ± 3.6 | 3 |" in custom


def test_default_metrics_fall_back_to_delta_keys():
    cols = ["ut_acc", "bwt", "forgetting", "a_acc", "avg", "delta/zs/cifar100/acc", "delta/ret/coco/i2t_r1"]
    assert report.default_metrics(cols) == cols[:4] + cols[5:]
    assert report.metric_label("delta/zs/cifar100/acc") == "Δ cifar100"
    assert report.metric_label("delta/ret/coco/t2i_r5") == "Δ coco t2i R@5"


def test_swept_override_splits_groups(tmp_path):
    root = tmp_path / "sweep"
    job = 0
    for alpha in ("0.5", "1"):
        for seed in range(2):
            make_run(root / f"{job}_lwf_s{seed}", "lwf", seed, (50.0 + float(alpha) * 10 + seed, -5.0),
                     extra_overrides=(f"method.alpha={alpha}",), alpha=float(alpha))
            job += 1
    make_run(root / f"{job}_finetune_s0", "finetune", 0, (40.0, -20.0))
    runs, missing = report.load_runs(report.find_runs([root]))
    assert not missing
    assert set(runs["method.alpha"]) == {"0.5", "1", report.DEFAULT_VALUE}
    agg = report.aggregate(runs, ["ut_acc"])
    assert list(agg.columns[:2]) == ["method", "method.alpha"]
    got = {(r["method"], r["method.alpha"]): (r["n"], r["ut_acc/mean"]) for _, r in agg.iterrows()}
    assert got == {("lwf", "0.5"): (2, pytest.approx(55.5)), ("lwf", "1"): (2, pytest.approx(60.5)),
                   ("finetune", report.DEFAULT_VALUE): (1, pytest.approx(40.0))}
    table = report.comparison_table(agg, ["ut_acc"])
    assert "| lwf | 0.5 | 55.5 ± 0.7 | 2 |" in table and "| lwf | 1 | 60.5 ± 0.7 | 2 |" in table


def test_write_report_writes_every_file(sweep, tmp_path):
    out = tmp_path / "rep"
    result = report.write_report([sweep], out)
    names = {Path(f).name for f in result["files"]}
    assert names == {"report.md", "runs.csv", "summary.csv", "summary.tex", "comparison.png"}
    for f in result["files"]:
        assert Path(f).is_file() and Path(f).stat().st_size > 0
    assert Path(out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert result["table"] in md and "±" in md and "53.0 ± 3.6" in md
    assert "## Missing or failed runs" in md
    missing_section = md.split("## Missing or failed runs", 1)[1]
    assert "6_lwf_s0" in missing_section and "no summary.json" in missing_section
    assert [m["run"] for m in result["missing"]] == [str(sweep / "6_lwf_s0")]
    assert len(pd.read_csv(out / "runs.csv")) == 6
    summary = pd.read_csv(out / "summary.csv").set_index("method")
    assert summary.loc["finetune", "ut_acc/mean"] == pytest.approx(53.0)
    assert summary.loc["finetune", "n"] == 3
    tex = (out / "summary.tex").read_text()
    assert r"\begin{tabular}" in tex and r"53.0 $\pm$ 3.6" in tex and r"vr\_lwf" in tex
    assert r"$\Delta$ i2t R@1" in tex


def test_write_report_missing_section_says_none(sweep, tmp_path):
    import shutil

    shutil.rmtree(sweep / "6_lwf_s0")
    result = report.write_report([sweep], tmp_path / "rep")
    assert result["missing"] == []
    md = (tmp_path / "rep" / "report.md").read_text()
    assert md.split("## Missing or failed runs", 1)[1].strip() == "none"


def test_latex_without_jinja2(sweep, monkeypatch):
    runs, _ = report.load_runs(report.find_runs([sweep]))

    def no_jinja(*args, **kwargs):
        raise ImportError("Missing optional dependency 'Jinja2'")

    monkeypatch.setattr(pd.DataFrame, "to_latex", no_jinja)
    tex = report.latex_table(report.aggregate(runs))
    assert tex.startswith(r"\begin{tabular}{lrrrrrr}") and r"\bottomrule" in tex
    assert r"finetune & 53.0 $\pm$ 3.6 & " in tex and tex.count(r" \\") == 3


def test_main_prints_table_and_defaults_out_dir(sweep, capsys):
    assert report.main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "| finetune | 53.0 ± 3.6 |" in out and "6_lwf_s0" in out and "no summary.json" in out
    assert (sweep / "report" / "report.md").is_file()
    # the report folder inside the sweep is not taken for a run next time
    assert len(report.find_runs([sweep])) == 7
    assert report.main([str(sweep), "--metrics", "bwt", "forgetting"]) == 0
    assert "| method | BWT | forgetting | n |" in capsys.readouterr().out
    assert report.main([str(sweep), "--metrics", "nope"]) == 2
    assert "unknown metric" in capsys.readouterr().err


def test_main_exit_2_without_finished_runs(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main([str(empty)]) == 2
    assert f"no run folders under {empty}" in capsys.readouterr().err

    unfinished = tmp_path / "unfinished"
    make_run(unfinished / "0_lwf_s0", "lwf", 0, None)
    make_run(unfinished / "1_lwf_s1", "lwf", 1, None)
    assert report.main([str(unfinished), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert f"no finished runs under {unfinished}: every run folder lacks summary.json" in err
    assert not (tmp_path / "rep").exists()

    assert report.main([str(tmp_path / "does_not_exist")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
