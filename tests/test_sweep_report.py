"""A sweep ends with its table: the Hydra callback writes <sweep>/report/ and prints the table, the
failed runs with their logs and the command that rebuilds the report; a failing report is one line."""

from __future__ import annotations

import io
from types import SimpleNamespace

from omegaconf import OmegaConf
from report_runs import make_protocol_runs

from clipcl_runner.sweep_report import SweepReport, summarize_sweep


def test_sweep_end_prints_the_table_failed_runs_with_logs_and_the_command(tmp_path, capsys):
    sweep = make_protocol_runs(tmp_path, "synthetic")
    (sweep / "6_finetune_s2" / "cli.log").write_text("Traceback ...\n")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    SweepReport().on_multirun_end(config)
    out = capsys.readouterr().out
    assert "| finetune | (default) | 60.5 ± 0.7 |" in out
    assert f"6_finetune_s2: no summary.json (unfinished or failed) (log: {sweep / '6_finetune_s2' / 'cli.log'})" in out
    assert f"rebuild: clipcl-report {sweep}" in out
    assert "Traceback" not in out
    assert (sweep / "report" / "report.md").is_file()


def test_sweep_without_finished_runs_is_one_line_not_an_error(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "0_lwf_s0" / ".hydra").mkdir(parents=True)
    (sweep / "0_lwf_s0" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    out = io.StringIO()
    assert summarize_sweep(sweep, out) is None
    text = out.getvalue()
    assert "no report: no finished runs" in text and f"clipcl-report {sweep}" in text


def test_a_failed_job_is_one_line_with_its_log(tmp_path, capsys):
    (tmp_path / "cli.log").write_text("x")
    config = OmegaConf.create(
        {
            "hydra": {
                "runtime": {"output_dir": str(tmp_path)},
                "job": {"num": 3, "name": "cli"},
                "overrides": {"task": ["method=lwf", "seed=1"]},
            }
        }
    )
    failed = SimpleNamespace(
        status=SimpleNamespace(name="FAILED"), _return_value=FloatingPointError("loss is nan\nmore")
    )
    SweepReport().on_job_end(config, failed)
    assert (
        capsys.readouterr().err
        == f"clipcl: job 3 (method=lwf seed=1) failed: FloatingPointError: loss is nan (log: {tmp_path / 'cli.log'})\n"
    )
    assert "FloatingPointError: loss is nan" in (tmp_path / "cli.log").read_text()  # the traceback's place
    assert type(failed._return_value).__name__ == "JobFailed"  # what the sweeper raises: a message
    SweepReport().on_job_end(config, SimpleNamespace(status=SimpleNamespace(name="COMPLETED")))
    assert capsys.readouterr().err == ""


def test_a_sweep_stopped_by_a_failed_job_still_ends_with_the_table(tmp_path, capsys, monkeypatch):
    import atexit

    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    sweep = make_protocol_runs(tmp_path, "mtil")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    callback = SweepReport()
    callback.on_multirun_start(config)
    assert registered == [callback.at_exit]
    callback.at_exit()  # Hydra raised (a job failed): on_multirun_end never came
    out = capsys.readouterr().out
    assert "jobs of the sweep failed" in out and "| finetune | (default) |" in out
    callback.on_multirun_end(config)  # reported once only
    callback.at_exit()
    assert capsys.readouterr().out == ""
