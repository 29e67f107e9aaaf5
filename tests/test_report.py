"""clipcl-report on a hand-made sweep folder: finding runs, missing runs, mean/std/n over
seeds, the Markdown/LaTeX tables, the written files and the CLI's exit codes; offline W&B
runs as input (real ones, written by RunTracker; W&B offline per conftest.py) and the mean
accuracy matrices."""

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


def make_run(
    folder: Path,
    method: str,
    seed: int,
    values: tuple[float, float] | None,
    extra_overrides: tuple[str, ...] = (),
    alpha: float | None = None,
) -> Path:
    """A run folder as the runner writes it; ``values=None`` leaves it unfinished (no summary.json)."""
    (folder / ".hydra").mkdir(parents=True)
    method_cfg = {"_target_": f"clipcl_runner.methods.{method}.X", "name": method}
    if alpha is not None:
        method_cfg["alpha"] = alpha
    config = {
        "seed": seed,
        "part": "whole",
        "method": method_cfg,
        "tasks": {"_target_": "clipcl_runner.data.synthetic.synthetic_task_sequence", "num_stages": 3},
        "logger": {"group": "sweep", "tags": ["test"]},
        "paths": {"output_dir": "${oc.env:CLIPCL_OUTPUTS,./outputs}"},  # left unresolved, as Hydra saves it
    }
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    overrides = [
        f"method={method}",
        f"seed={seed}",
        "experiment=synthetic_test",
        "logger=none",
        "trainer.progress=false",
        f"hydra.job.num={seed}",
        *extra_overrides,
    ]
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))

    ut_acc, d_i2t = values if values is not None else (40.0, -10.0)
    i2t_zero_shot = 38.0
    rows = []
    for stage, name in enumerate(STAGES):
        frac = stage / 3
        row = {
            "stage": stage,
            "stage_name": name,
            **{f"task/{t}/acc": 30.0 + 10 * stage for t in STAGES[1:]},
            "zs/colour/acc": 98.0 - 10 * frac,
            "ret/heldout/i2t_r1": i2t_zero_shot + d_i2t * frac + seed,
        }
        if stage:
            row["train/loss"] = 1.0 / stage
        rows.append(row)
    if values is None:
        rows = rows[:2]  # crashed after T1
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if values is not None:
        summary = {
            "ut_acc": ut_acc,
            "bwt": -(60.0 - ut_acc),
            "forgetting": 60.0 - ut_acc,
            "a_acc": ut_acc / 2,
            "stages": 3,
            "transfer": None,
            "ret/heldout/i2t_r1": i2t_zero_shot + d_i2t,
            "delta/ret/heldout/i2t_r1": d_i2t,
            "delta/ret/heldout/t2i_r1": d_i2t / 2,
            "zs/colour/acc": 88.0,
            "delta/zs/colour/acc": -10.0 - seed,
            "delta/zs/colour_shape/acc": -1.0,
        }
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
    assert missing == [
        {"run": str(sweep / "6_lwf_s0"), "method": "lwf", "seed": 0, "reason": "no summary.json (unfinished or failed)"}
    ]
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
    assert agg.loc["finetune", "ut_acc/std"] == pytest.approx(13**0.5)
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
    assert lines[0] == ("| method | final mean task acc | Δ i2t R@1 | Δ t2i R@1 | Δ colour | Δ colour+shape | n |")
    assert len(lines) == 4  # header, rule, 2 methods
    # finetune: ut 53.0 ± 3.6; Δ i2t -26.3 ± 2.5; Δ t2i -13.2 ± 1.3; Δ colour -11.0 ± 1.0
    assert "| finetune | 53.0 ± 3.6 | -26.3 ± 2.5 | -13.2 ± 1.3 | -11.0 ± 1.0 | -1.0 ± 0.0 | 3 |" in lines
    assert "| vr_lwf | 61.3 ± 1.3 | -6.2 ± 1.3 | -3.1 ± 0.6 | -11.0 ± 1.0 | -1.0 ± 0.0 | 3 |" in lines
    custom = report.comparison_table(report.aggregate(runs), ["bwt"], {"bwt": "BWT (pts)"})
    assert custom.splitlines()[0] == "| method | BWT (pts) | n |"
    assert "| finetune | -7.0 ± 3.6 | 3 |" in custom


@pytest.mark.parametrize(
    "columns,expected",
    [
        (
            [
                "ut_acc/mean",
                "transfer/mean",
                "avg/mean",
                "last/mean",
                "bwt/mean",
                "forgetting/mean",
                "zero_shot_transfer/mean",
            ],
            ["transfer", "avg", "last", "bwt", "forgetting"],
        ),  # MTIL
        (["ut_acc/mean", "bwt/mean", "cil_avg/mean", "cil_last/mean"], ["cil_avg", "cil_last"]),  # class-incremental
    ],
)
def test_default_metrics_of_zscls_protocols(columns, expected):
    assert report.default_metrics(columns) == expected
    assert report.metric_label("cil_avg") == "CIL avg"


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
            make_run(
                root / f"{job}_lwf_s{seed}",
                "lwf",
                seed,
                (50.0 + float(alpha) * 10 + seed, -5.0),
                extra_overrides=(f"method.alpha={alpha}",),
                alpha=float(alpha),
            )
            job += 1
    make_run(root / f"{job}_finetune_s0", "finetune", 0, (40.0, -20.0))
    runs, missing = report.load_runs(report.find_runs([root]))
    assert not missing
    assert set(runs["method.alpha"]) == {"0.5", "1", report.DEFAULT_VALUE}
    agg = report.aggregate(runs, ["ut_acc"])
    assert list(agg.columns[:2]) == ["method", "method.alpha"]
    got = {(r["method"], r["method.alpha"]): (r["n"], r["ut_acc/mean"]) for _, r in agg.iterrows()}
    assert got == {
        ("lwf", "0.5"): (2, pytest.approx(55.5)),
        ("lwf", "1"): (2, pytest.approx(60.5)),
        ("finetune", report.DEFAULT_VALUE): (1, pytest.approx(40.0)),
    }
    table = report.comparison_table(agg, ["ut_acc"])
    assert "| lwf | 0.5 | 55.5 ± 0.7 | 2 |" in table and "| lwf | 1 | 60.5 ± 0.7 | 2 |" in table


def test_settings_that_do_not_change_results_do_not_split_groups(tmp_path):
    """trainer.threads / num_workers / progress say how fast a run went, not what it computed."""
    root = tmp_path / "sweep"
    for job, (seed, threads) in enumerate([(0, "1"), (1, "4"), (2, "8")]):
        make_run(
            root / f"{job}_finetune_s{seed}",
            "finetune",
            seed,
            (50.0 + seed, -5.0),
            extra_overrides=(f"trainer.threads={threads}", f"trainer.num_workers={seed}"),
        )
    runs, _ = report.load_runs(report.find_runs([root]))
    assert "trainer.threads" not in runs.columns and "trainer.num_workers" not in runs.columns
    agg = report.aggregate(runs, ["ut_acc"])
    assert len(agg) == 1 and agg.loc[0, "n"] == 3 and agg.loc[0, "ut_acc/mean"] == pytest.approx(51.0)
    assert agg.loc[0, "ut_acc/std"] == pytest.approx(statistics.stdev([50.0, 51.0, 52.0]))


def test_stray_folders_are_listed_apart_from_failed_runs(sweep, tmp_path):
    (sweep / "7_finetune_s0").mkdir()  # a start refused before it took its folder: only Hydra's log
    (sweep / "7_finetune_s0" / "cli.log").write_text("clipcl: error: ...\n")
    (sweep / "rank1").mkdir()  # a torchrun rank's own folder
    (sweep / "rank1" / "job.json").write_text("[]")
    assert [p.name for p in report.find_strays([sweep])] == ["7_finetune_s0", "rank1"]
    result = report.write_report([sweep], tmp_path / "rep")
    assert [m["run"] for m in result["missing"]] == [str(sweep / "6_lwf_s0")]  # strays are not failed runs
    assert [Path(p).name for p in result["strays"]] == ["7_finetune_s0", "rank1"]
    text = (tmp_path / "rep" / "report.md").read_text()
    missing_part, stray_part = text.split("## Stray folders")
    assert "7_finetune_s0" not in missing_part and "7_finetune_s0" in stray_part and "rank1" in stray_part


def test_write_report_writes_every_file(sweep, tmp_path):
    out = tmp_path / "rep"
    result = report.write_report([sweep], out)
    names = {Path(f).name for f in result["files"]}
    assert names == {
        "report.md",
        "runs.csv",
        "summary.csv",
        "summary.tex",
        "comparison.png",
        "matrix_finetune.png",
        "matrix_vr_lwf.png",
    }  # the lwf run is unfinished
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


# --------------------------------------------------------------------------- W&B runs as input

EVAL_ROWS = [
    {"stage": 0, "stage_name": "zero-shot", "task/T1/acc": 10.0, "ret/heldout/i2t_r1": 38.0},
    {"stage": 1, "stage_name": "T1", "task/T1/acc": 80.5, "ret/heldout/i2t_r1": 30.0},
]
WANDB_SUMMARY = {"ut_acc": 80.5, "bwt": 0.0, "delta/ret/heldout/i2t_r1": -8.0}


def make_tracked_run(run_dir: Path, method: str, seed: int, summary: dict | None = WANDB_SUMMARY) -> Path:
    """A run folder with a real offline W&B run inside, as RunTracker writes it."""
    from clipcl_runner.tracking import RunTracker

    config = {"seed": seed, "part": "whole", "method": {"name": method, "alpha": 0.5}}
    with RunTracker(run_dir, config=config, mode="offline") as tracker:
        for row in EVAL_ROWS:
            tracker.log_eval(row)
        if summary is not None:
            tracker.log_summary(summary)
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    return run_dir


def keep_only_wandb(run_dir: Path) -> None:
    """What is left when only wandb/ was copied off the cluster."""
    import shutil

    for entry in run_dir.iterdir():
        if entry.name != "wandb":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def test_wandb_only_run_is_read(tmp_path):
    run_dir = make_tracked_run(tmp_path / "copied" / "run", "lwf", 3)
    unfinished = make_tracked_run(tmp_path / "copied" / "crashed", "lwf", 4, summary=None)
    keep_only_wandb(run_dir)
    keep_only_wandb(unfinished)

    found = report.find_runs([tmp_path / "copied"])
    assert len(found) == 2 and all(p.name.startswith("offline-run-") for p in found)
    # the wandb/ folder or the offline-run-* folder itself finds the same run
    assert report.find_runs([run_dir / "wandb"]) == [f for f in found if f.parent.parent == run_dir]

    runs, missing = report.load_runs(found)
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["method"] == "lwf" and row["seed"] == 3 and row["part"] == "whole"
    assert row["ut_acc"] == 80.5 and row["delta/ret/heldout/i2t_r1"] == -8.0
    assert not any(c.startswith("_") or c in ("stage", "stage_name") for c in runs.columns)
    assert missing == [
        {
            "run": str(next(f for f in found if f.parent.parent == unfinished)),
            "method": "lwf",
            "seed": 4,
            "reason": report.NO_WANDB_SUMMARY,
        }
    ]

    rows = report.read_metrics_rows(row["run"])
    assert [(r["stage"], r["stage_name"]) for r in rows] == [(0, "zero-shot"), (1, "T1")]
    assert [r["ret/heldout/i2t_r1"] for r in rows] == [38.0, 30.0]
    assert not any(k.startswith("_") for r in rows for k in r)

    result = report.write_report([tmp_path / "copied"], tmp_path / "rep")
    assert "| lwf | 80.5 |" in result["table"]
    assert not any(Path(f).name.startswith("matrix_") for f in result["files"])  # W&B copy has no csv


def test_run_folder_with_wandb_inside_counts_once(tmp_path):
    run_dir = make_tracked_run(tmp_path / "sweep" / "0_lwf_s0", "lwf", 0)
    wandb_run = next((run_dir / "wandb").glob("offline-run-*"))
    # the sweep, the wandb folder and the W&B run given directly: always the run folder
    for paths in ([tmp_path / "sweep"], [wandb_run], [tmp_path / "sweep", run_dir / "wandb", wandb_run]):
        assert report.find_runs(paths) == [run_dir], paths

    # W&B written elsewhere (logger.dir): matched to the run folder by wandb_run_id.txt
    elsewhere = tmp_path / "wandb_elsewhere"
    import shutil

    shutil.copytree(run_dir / "wandb", elsewhere / "wandb", symlinks=True)
    assert report.find_runs([tmp_path / "sweep", elsewhere]) == [run_dir]
    runs, missing = report.load_runs(report.find_runs([tmp_path / "sweep", elsewhere]))
    assert len(runs) == 1 and not missing and runs.iloc[0]["run"] == str(run_dir)


# --------------------------------------------------------------------------- mean accuracy matrices


def write_matrix(run_dir: Path, values, index=("zero-shot", "after T1", "after T2"), columns=("T1", "T2")) -> None:
    pd.DataFrame(values, index=list(index), columns=list(columns)).to_csv(run_dir / "accuracy_matrix.csv")


def test_mean_matrices_and_heatmaps(tmp_path):
    root = tmp_path / "sweep"
    matrices = {  # method -> seed -> matrix
        "finetune": {0: [[10, 12], [80, 11], [40, 90]], 1: [[10, 14], [70, 13], [50, 80]]},
        "vr_lwf": {0: [[10, 12], [82, 20], [75, 88]], 1: [[10, 12], [78, float("nan")], [65, 84]]},
    }
    job = 0
    dirs: dict[str, list[Path]] = {}
    for method, seeds in matrices.items():
        for seed, values in seeds.items():
            run = make_run(root / f"{job}_{method}_s{seed}", method, seed, VALUES[method][seed])
            write_matrix(run, values)
            dirs.setdefault(method, []).append(run)
            job += 1
    odd = make_run(root / f"{job}_vr_lwf_s2", "vr_lwf", 2, VALUES["vr_lwf"][2])
    write_matrix(odd, [[1, 2, 3]], index=("zero-shot",), columns=("T1", "T2", "T3"))

    mean = report.mean_matrices(dirs["finetune"])
    expected = pd.DataFrame(
        [[10.0, 13.0], [75.0, 12.0], [45.0, 85.0]], index=["zero-shot", "after T1", "after T2"], columns=["T1", "T2"]
    )
    pd.testing.assert_frame_equal(mean, expected)
    # a NaN cell is the mean of the seeds that have it; the odd-shaped run is left out
    mean_vr = report.mean_matrices([*dirs["vr_lwf"], odd])
    assert mean_vr.loc["after T1", "T2"] == 20.0 and mean_vr.loc["after T2", "T1"] == 70.0
    assert mean_vr.attrs["skipped"] == [str(odd)] and len(mean_vr.attrs["runs"]) == 2
    assert report.mean_matrices([tmp_path]) is None

    out = tmp_path / "rep"
    result = report.write_report([root], out)
    for method in matrices:
        png = out / f"matrix_{method}.png"
        assert str(png) in result["files"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    section = md.split("## Accuracy matrices (mean over seeds)", 1)[1].split("## Missing", 1)[0]
    assert "](matrix_finetune.png)" in section and "](matrix_vr_lwf.png)" in section
    assert "### vr_lwf (n=2)" in section and f"{job}_vr_lwf_s2" in section  # the skipped run is noted


def test_file_safe_group_label():
    assert report._file_safe("lwf (alpha=0.5, lr=1e-5)") == "lwf_alpha-0_5_lr-1e-5"


def test_matrix_file_names_are_plain_and_unique():
    from clipcl_runner.report.figures import _unique

    taken: set[str] = set()
    labels = ["lwf (alpha=0.5)", "lwf (alpha=0_5)", "LWF (alpha=0.5)", "(=)"]
    # the second maps to the first's name and the third differs only in case (one file on macOS/Windows)
    assert [_unique(report._file_safe(label), taken) for label in labels] == [
        "lwf_alpha-0_5",
        "lwf_alpha-0_5-2",
        "LWF_alpha-0_5-3",
        "group",
    ]


def _many_groups(root: Path) -> Path:
    """14 groups: finetune, lwf x 5 alphas, zscl x 4, wise_ft x 4; 2 seeds each."""
    job = 0
    plan = [
        ("finetune", [None]),
        ("lwf", [0.1, 0.3, 1.0, 3.0, 10.0]),
        ("zscl", [0.5, 1.0, 2.0, 4.0]),
        ("wise_ft", [0.2, 0.5, 0.8, 0.9]),
    ]
    for m, (method, alphas) in enumerate(plan):
        for a, alpha in enumerate(alphas):
            for seed in range(2):
                make_run(
                    root / f"{job}_{method}_s{seed}",
                    method,
                    seed,
                    (45 + 5 * m + 2 * a + seed, -25 + 4 * m + a),
                    extra_overrides=(f"method.alpha={alpha}",) if alpha is not None else (),
                    alpha=alpha,
                )
                job += 1
    return root


def test_comparison_figure_at_14_groups_keeps_legends_off_the_data(tmp_path):
    from clipcl_runner.report.figures import comparison_figure

    runs, _ = report.load_runs(report.find_runs([_many_groups(tmp_path / "big")]))
    assert len(report.aggregate(runs)) == 14
    fig = comparison_figure(runs)
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    axes = [ax.get_window_extent(renderer) for ax in fig.axes]
    legends = fig.legends
    assert [lg.get_title().get_text() for lg in legends] == ["method (colour)", "swept option (marker)"]
    assert len(legends[0].get_texts()) == 4 and len(legends[1].get_texts()) == 12  # defaults + 11 distinct alphas
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(ax) for ax in axes)
    # method by colour, option by marker: two lwf groups share a colour and differ in marker
    lines = fig.axes[1].get_lines()
    assert len(lines) == 14
    assert lines[1].get_color() == lines[2].get_color() and lines[1].get_marker() != lines[2].get_marker()
    assert fig.axes[0].get_xlabel() == "final mean task acc (%)"


@pytest.mark.parametrize(
    "protocol,expected",
    [
        ("synthetic", ("ut_acc", "delta/ret/heldout/i2t_r1", "ret/heldout/i2t_r1")),
        ("mtil", ("avg", "transfer", "task/mean")),
        ("cil", ("cil_avg", "cil_last", "cil/acc")),
    ],
)
def test_comparison_metrics_follow_the_protocol(tmp_path, protocol, expected):
    from report_runs import make_protocol_runs

    from clipcl_runner.report.figures import comparison_metrics

    runs, _ = report.load_runs(report.find_runs([make_protocol_runs(tmp_path, protocol)]))
    assert comparison_metrics(runs) == expected
