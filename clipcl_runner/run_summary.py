"""A run's evaluation rows (metrics.jsonl) to its accuracy matrix and summary.json (the runner's).

``metrics`` holds the formulas on an accuracy matrix; this module picks the matrix and the probes out
of the rows and calls them.

Plain numpy, no pandas: the runner imports this module, and pandas is a report-side dependency
(the GPU image, for one, has no pandas). ``AccuracyMatrix`` offers the few DataFrame methods the
run's tracker and plots use, and ``to_pandas()`` for everything else.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from . import metric_names as names
from . import metrics


class Labels(list):
    """Row or column labels; ``name`` as a pandas Index has one (unnamed)."""

    name = None


@dataclass
class AccuracyMatrix:
    """Rows = evaluations, columns = the stages' test sets, values in percent (NaN: not evaluated)."""

    values: np.ndarray
    index: Labels
    columns: Labels

    def to_numpy(self, dtype=float, na_value=np.nan) -> np.ndarray:
        values = np.array(self.values, dtype=dtype)
        values[np.isnan(values)] = na_value
        return values

    def to_csv(self, index: bool = True) -> str:
        """The CSV pandas' ``DataFrame.to_csv()`` writes: an empty corner cell, floats by repr, NaN empty."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(([""] if index else []) + [str(c) for c in self.columns])
        for label, row in zip(self.index, self.values.tolist()):
            cells = ["" if np.isnan(v) else repr(float(v)) for v in row]
            writer.writerow(([str(label)] if index else []) + cells)
        return out.getvalue()

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.values, index=list(self.index), columns=list(self.columns), dtype=float)

    def copy(self):
        """A DataFrame copy (as ``DataFrame.copy``): for W&B tables, which need pandas anyway."""
        return self.to_pandas()


def accuracy_matrix(rows: list[dict], stage_names: list[str]) -> AccuracyMatrix:
    """Rows = evaluations (the zero-shot row first when present), columns = every stage's test set."""
    index = [row["stage_name"] for row in rows]
    values = [[row.get(names.task_acc(name), np.nan) for name in stage_names] for row in rows]
    array = np.array(values, dtype=float).reshape(len(rows), len(stage_names))
    return AccuracyMatrix(array, Labels(index), Labels(stage_names))


def probe_values(row: dict) -> dict[str, float]:
    """The row's probe metrics (every kind ``metric_names`` calls a probe): their summary gets a delta."""
    return {key: float(value) for key, value in row.items() if names.is_probe(key)}


def stage_end_rows(rows: list[dict]) -> list[dict]:
    """The evaluations at stage boundaries (rows inside a stage, e.g. per epoch, have a fractional stage)."""
    return [row for row in rows if float(row["stage"]).is_integer()]


def run_summary(rows: list[dict], stage_names: list[str], primary_zero_shot: str | None = None) -> dict:
    """The continual-learning summary of a finished run (see ``metrics.summarize``) plus A-Acc."""
    rows = stage_end_rows(rows)
    stage_rows = [row for row in rows if row["stage"] > 0]
    zero_shot = next((row for row in rows if row["stage"] == 0), None)
    trained = accuracy_matrix(stage_rows, stage_names).to_numpy()
    zero_shot_row = accuracy_matrix([zero_shot], stage_names).to_numpy()[0] if zero_shot else None
    summary = metrics.summarize(
        trained,
        zero_shot_row,
        probes=probe_values(stage_rows[-1]),
        probe_zero_shot=probe_values(zero_shot) if zero_shot else None,
    )
    steps = [row[names.CIL_ACC] for row in stage_rows if names.CIL_ACC in row]
    if steps:  # class-incremental protocol: Avg / Last of the accuracy on all classes seen so far
        summary.update({f"cil_{key}": value for key, value in metrics.cil_summary(steps).items()})
    if primary_zero_shot and primary_zero_shot in summary:
        summary["a_acc"] = metrics.a_acc(summary["ut_acc"], summary[primary_zero_shot])
    summary["stages"] = len(stage_rows)
    return summary
