"""The comparison table (Markdown and LaTeX) and its columns: the runs' eval protocol's headline metrics."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd

from .. import metric_names as names
from .aggregate import STAT_SUFFIXES
from .runs import _display_path

# The protocols' columns for run folders written before summary.json had the eval protocol's
# ``headline`` (conf/eval/*.yaml holds the same lists now).
SYNTHETIC_METRICS = (
    "ut_acc",
    names.delta(names.retrieval("heldout", "i2t", 1)),
    names.delta(names.retrieval("heldout", "t2i", 1)),
    names.delta(names.zero_shot_acc("colour")),
    names.delta(names.zero_shot_acc("colour_shape")),
)
FALLBACK_METRICS = ("ut_acc", "bwt", "forgetting", "a_acc")
MTIL_METRICS = ("transfer", "avg", "last", "bwt", "forgetting")  # ZSCL's MTIL table (+ BWT, forgetting)
CIL_METRICS = ("cil_avg", "cil_last")


def _strip_stat(column: str) -> str:
    """'ut_acc/mean' -> 'ut_acc' (aggregated columns), other names unchanged."""
    for suffix in STAT_SUFFIXES:
        if column.endswith(suffix):
            return column[: -len(suffix)]
    return column


def default_metrics(columns: Iterable[str], headline: Sequence[str] | None = None) -> list[str]:
    """The runs' eval protocol's ``headline`` (from their summary.json) where they have one, those of
    its metrics that are present; else, for run folders from before it, the protocol told by the columns:
    the synthetic protocol's headline metrics when present; CIL's Avg / Last for class-incremental
    runs; MTIL's Transfer / Avg / Last (+ BWT, forgetting) for runs with a zero-shot row and no
    probes; else ``ut_acc``, ``bwt``, ``forgetting``, ``a_acc`` and every ``delta/*`` metric that exists."""
    columns = list(dict.fromkeys(_strip_stat(c) for c in columns))
    present = set(columns)
    chosen = [m for m in headline or () if m in present]
    if chosen:
        return chosen
    if any(m in present for m in SYNTHETIC_METRICS if names.is_delta(m)):
        return [m for m in SYNTHETIC_METRICS if m in present]
    if "cil_avg" in present:
        return [m for m in CIL_METRICS if m in present]
    if "zero_shot_transfer" in present and not any(names.is_delta(m) for m in columns):
        return [m for m in MTIL_METRICS if m in present]
    return [m for m in FALLBACK_METRICS if m in present] + [m for m in columns if names.is_delta(m)]


def metric_label(metric: str) -> str:
    """Short column label (``metric_names.label``): 'delta/zs/cifar100/acc' -> 'Δ cifar100',
    'delta/ret/coco/i2t_r1' -> 'Δ coco i2t R@1'."""
    return names.label(metric)


def _agg_group_columns(agg: pd.DataFrame) -> list[str]:
    return [c for c in agg.columns if c not in ("n", "seeds") and not c.endswith(STAT_SUFFIXES)]


def _number(x: float) -> str:
    return f"{x + 0.0:.1f}"  # +0.0: no "-0.0"


def _cell(agg_row: pd.Series, metric: str, pm: str = "±") -> str:
    mean, std = agg_row.get(f"{metric}/mean"), agg_row.get(f"{metric}/std")
    n_metric, n = agg_row.get(f"{metric}/n"), agg_row.get("n")
    if mean is None or not math.isfinite(float(mean)):
        return "–"
    text = _number(float(mean))
    if n > 1 and std is not None and math.isfinite(float(std)):
        text += f" {pm} {_number(float(std))}"
    if n_metric is not None and n_metric < n:  # a seed has no value for this metric
        text += f" (n={int(n_metric)})"
    return text


def _display_table(agg: pd.DataFrame, metrics: Sequence[str], labels: dict | None, pm: str = "±") -> pd.DataFrame:
    labels = {**{m: metric_label(m) for m in metrics}, **(labels or {})}
    groups = _agg_group_columns(agg)
    table = pd.DataFrame({g: agg[g].astype(str) for g in groups})
    for m in metrics:
        table[labels[m]] = [_cell(row, m, pm) for _, row in agg.iterrows()]
    table["n"] = agg["n"].astype(int).astype(str)
    return table


def _resolve_metrics(agg: pd.DataFrame, metrics: Sequence[str] | None) -> list[str]:
    available = [c[: -len("/mean")] for c in agg.columns if c.endswith("/mean")]
    if metrics is None:  # the runs' headline came through ``aggregate`` (``load_runs`` read it)
        return default_metrics(available, agg.attrs.get(names.HEADLINE))
    unknown = [m for m in metrics if m not in available]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; available: {available}")
    return list(metrics)


def comparison_table(
    agg: pd.DataFrame, metrics: Sequence[str] | None = None, labels: dict[str, str] | None = None
) -> str:
    """Markdown table: one row per group, each cell ``mean ± std`` over seeds with one
    decimal (just the mean when n=1; "(n=k)" when only k seeds have that metric), then ``n``."""
    metrics = _resolve_metrics(agg, metrics)
    table = _display_table(agg, metrics, labels)
    header = list(table.columns)
    right = [False] * len(_agg_group_columns(agg)) + [True] * (len(header) - len(_agg_group_columns(agg)))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if r else ":---" for r in right) + "|"]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
}


def _latex_escape(text: str) -> str:
    text = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    return text.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("–", "--")


def latex_table(agg: pd.DataFrame, metrics: Sequence[str] | None = None, labels: dict[str, str] | None = None) -> str:
    """The comparison table as a LaTeX tabular (booktabs), pdflatex-safe (``$\\pm$``,
    ``$\\Delta$``). Uses pandas ``to_latex`` when jinja2 is there, else builds it by hand."""
    metrics = _resolve_metrics(agg, metrics)
    table = _display_table(agg, metrics, labels)
    table = table.apply(lambda column: column.map(_latex_escape))
    table.columns = [_latex_escape(c) for c in table.columns]
    n_groups = len(_agg_group_columns(agg))
    column_format = "l" * n_groups + "r" * (table.shape[1] - n_groups)
    try:
        return table.to_latex(index=False, escape=False, column_format=column_format)
    except ImportError:  # pandas' Styler needs jinja2
        lines = [rf"\begin{{tabular}}{{{column_format}}}", r"\toprule", " & ".join(table.columns) + r" \\", r"\midrule"]
        lines += [" & ".join(row) + r" \\" for row in table.astype(str).itertuples(index=False)]
        lines += [r"\bottomrule", r"\end{tabular}", ""]
        return "\n".join(lines)


def missing_lines(missing: Sequence[dict]) -> list[str]:
    if not missing:
        return ["none"]
    return [f"- `{_display_path(m['run'])}` (method {m['method']}, seed {m['seed']}): {m['reason']}" for m in missing]
