"""A W&B workspace for a sweep: the continual-learning curves over stages grouped by method, the final
table, the accuracy matrices and the training curves, as the runner logs them (tracking.py).

    python -m clipcl_runner.dashboard outputs/multirun/sweep_methods_2026-11-29_20-00-00_ab12cd
        # writes <sweep>/report/wandb_workspace.json (the spec) and prints it: no network
    python -m clipcl_runner.dashboard <sweep> --entity me --create
        # creates the workspace in W&B (online; needs `pip install wandb-workspaces` and `wandb login`)

The spec is plain JSON (sections of panels, the runset's filter and grouping), so it is written and
checked offline; ``--create`` turns it into a ``wandb_workspaces`` Workspace and saves it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import metric_names

# The CL summary series logged at each stage end (tracking.py: cl/<summary key>); the report's order.
CL_SERIES = tuple(
    metric_names.cl_series(key)
    for key in ("ut_acc", "bwt", "forgetting", "transfer", "avg", "last", "a_acc", "cil_avg", "cil_last")
)
TRAIN_SERIES = ("step/loss", "step/lr")
METHOD = "method.name"  # the config field runs are grouped by (one colour per method, mean over seeds)
TABLE_SUMMARY = ("ut_acc", "bwt", "forgetting", "transfer", "avg", "last", "cil_avg", "cil_last")


def _logged_keys(sweep: Path) -> tuple[list[str], list[str]]:
    """(summary keys, row keys) found in the sweep's run folders (empty when ``sweep`` is not a folder)."""
    summary: dict[str, None] = {}
    rows: dict[str, None] = {}
    if not sweep.is_dir():
        return [], []
    for path in sorted(sweep.glob("*/summary.json")):
        try:
            summary.update((k, None) for k in json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    for path in sorted(sweep.glob("*/metrics.jsonl"))[:1]:
        for line in path.read_text(encoding="utf-8").splitlines()[:1]:
            try:
                rows.update((k, None) for k in json.loads(line))
            except ValueError:
                continue
    return list(summary), list(rows)


def workspace_spec(
    group: str,
    *,
    project: str = "clipcl",
    entity: str | None = None,
    summary_keys: Iterable[str] = (),
    row_keys: Iterable[str] = (),
) -> dict:
    """The workspace of one sweep (W&B group ``group``): the CL series over stages (those the summary has,
    plus each probe's change), the probes over stages, the final table, the matrices and the training curves."""
    summary_keys, row_keys = list(summary_keys), list(row_keys)
    known = set(summary_keys)
    cl = [k for k in CL_SERIES if not known or k.removeprefix(metric_names.CL_SERIES) in known]
    deltas = [metric_names.cl_series(k) for k in summary_keys if metric_names.is_delta(k)]
    # retrieval at R@1 only (R@5 and R@10 follow it)
    probes = [k for k in row_keys if metric_names.is_probe(k) and metric_names.recall_k(k) in (None, 1)]

    def lines(keys: Sequence[str], x: str = "stage") -> list[dict]:
        return [
            {"type": "line", "x": x, "y": [key], "title": key, "groupby": METHOD, "aggregate": "mean"} for key in keys
        ]

    columns = [f"config.{METHOD}", "config.preset", "config.task_sequence", "config.seed"]
    columns += [f"summary.{k}" for k in TABLE_SUMMARY if not known or k in known]
    columns += [f"summary.{k}" for k in summary_keys if metric_names.is_delta(k)]
    return {
        "name": f"clipcl {group}",
        "project": project,
        "entity": entity,
        "runset": {"filter": {"config.logger.group": group}, "groupby": [f"config.{METHOD}"]},
        "sections": [
            {"name": "Continual learning over stages (mean over seeds per method)", "panels": lines(cl + deltas)},
            {"name": "Probes over stages", "panels": lines(probes)},
            {"name": "Final table", "panels": [{"type": "table", "columns": columns}]},
            {
                "name": "Accuracy matrices",
                "panels": [{"type": "media", "key": "accuracy_matrix_heatmap"}, {"type": "media", "key": "probes"}],
            },
            {"name": "Training", "panels": lines(TRAIN_SERIES, x="train/step")},
        ],
    }


def build_workspace(spec: dict):
    """The spec as a ``wandb_workspaces`` Workspace (saved by the caller with ``.save()``)."""
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as error:
        raise ImportError(
            f"creating a W&B workspace needs wandb-workspaces ({error}): pip install wandb-workspaces"
        ) from None

    def panel(p: dict):
        if p["type"] == "line":
            return wr.LinePlot(
                x=p["x"], y=p["y"], title=p["title"], groupby=p["groupby"], groupby_aggfunc=p["aggregate"]
            )
        if p["type"] == "media":
            return wr.MediaBrowser(media_keys=[p["key"]])
        return wr.RunComparer(diff_only=False)

    sections = [
        ws.Section(name=s["name"], panels=[panel(p) for p in s["panels"]], is_open=True)
        for s in spec["sections"]
        if s["panels"]
    ]
    group = spec["runset"]["filter"]["config.logger.group"]
    runset = ws.RunsetSettings(filters=f"Config('logger.group') = '{group}'", groupby=[ws.Config(METHOD)])
    return ws.Workspace(
        name=spec["name"], entity=spec["entity"], project=spec["project"], sections=sections, runset_settings=runset
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clipcl_runner.dashboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep", help="the sweep folder (its name is the runs' W&B group), or a W&B group name")
    parser.add_argument("--project", default="clipcl")
    parser.add_argument("--entity", default=None)
    parser.add_argument("--spec", type=Path, default=None, help="where to write the spec (default: <sweep>/report/)")
    parser.add_argument("--create", action="store_true", help="create the workspace in W&B (online)")
    args = parser.parse_args(argv)

    sweep = Path(args.sweep)
    spec = workspace_spec(
        sweep.name,
        project=args.project,
        entity=args.entity,
        **dict(zip(("summary_keys", "row_keys"), _logged_keys(sweep))),
    )
    target = args.spec or (
        sweep / "report" / "wandb_workspace.json" if sweep.is_dir() else Path("wandb_workspace.json")
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    print(f"workspace spec: {target}")
    if not args.create:
        return 0
    try:
        workspace = build_workspace(spec)
        workspace.save()
    except Exception as error:  # noqa: BLE001 - offline, not logged in, no package: one line, the spec stays
        first = (str(error).splitlines() or [""])[0]
        print(f"clipcl dashboard: the workspace was not created: {type(error).__name__}: {first}", file=sys.stderr)
        return 2
    print(f"workspace: {getattr(workspace, 'url', '(saved)')}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
