"""The W&B workspace spec of a sweep, generated offline from its run folders."""

from __future__ import annotations

import json

from report_runs import make_protocol_runs

from clipcl_runner import dashboard


def test_spec_of_a_synthetic_sweep(tmp_path):
    sweep = make_protocol_runs(tmp_path, "synthetic")
    assert dashboard.main([str(sweep)]) == 0
    spec = json.loads((sweep / "report" / "wandb_workspace.json").read_text())
    assert spec["runset"] == {"filter": {"config.logger.group": sweep.name}, "groupby": ["config.method.name"]}
    sections = {s["name"]: s["panels"] for s in spec["sections"]}
    curves = sections["Continual learning over stages (mean over seeds per method)"]
    ys = [p["y"][0] for p in curves]
    assert ys[:3] == ["cl/ut_acc", "cl/bwt", "cl/forgetting"] and "cl/delta/ret/heldout/i2t_r1" in ys
    assert "cl/cil_avg" not in ys  # only what the runs log
    assert all(p["x"] == "stage" and p["groupby"] == "method.name" for p in curves)
    assert [p["y"][0] for p in sections["Probes over stages"]] == [
        "zs/colour/acc",
        "ret/heldout/i2t_r1",
        "ret/heldout/t2i_r1",
    ]
    assert {p["key"] for p in sections["Accuracy matrices"]} == {"accuracy_matrix_heatmap", "probes"}
    assert [(p["x"], p["y"][0]) for p in sections["Training"]] == [
        ("train/step", "step/loss"),
        ("train/step", "step/lr"),
    ]
    assert "summary.delta/zs/colour/acc" in sections["Final table"][0]["columns"]


def test_cil_sweep_gets_its_own_curves(tmp_path):
    spec = dashboard.workspace_spec("g", summary_keys=["ut_acc", "cil_avg", "cil_last"], row_keys=["cil/acc"])
    ys = [p["y"][0] for p in spec["sections"][0]["panels"]]
    assert ys == ["cl/ut_acc", "cl/cil_avg", "cl/cil_last"]


def test_create_without_the_package_or_network_is_one_line(tmp_path, capsys):
    sweep = make_protocol_runs(tmp_path, "cil")
    code = dashboard.main([str(sweep), "--create", "--entity", "nobody"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("clipcl dashboard: the workspace was not created:") and err.count("\n") == 1
    assert (sweep / "report" / "wandb_workspace.json").is_file()
