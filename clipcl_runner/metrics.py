"""Continual-learning summaries of an accuracy matrix (pure numpy): the formulas.

``run_summary`` turns a run's evaluation rows into the matrix and calls these.

Convention (see docs/protocols.md, "Metrics of the paper" and ZSCL's
metrics):

* ``acc`` is a float array of accuracies in percent. Row ``t`` (0-indexed among the
  *trained* rows) is the evaluation after training stage ``t``; column ``i`` is the test
  set of stage ``i``. It has shape ``(T, T)`` or, when it starts with a zero-shot row
  (evaluation of the model before any training), ``(T + 1, T)``; callers say which with
  ``has_zero_shot_row`` (see :func:`matrix_rows`). Fewer trained rows than columns
  (``R <= T``, a run stopped early) are accepted: "final" then means the last trained row.
* ``NaN`` means "not evaluated". Every mean below is a nan-mean (missing entries are
  dropped from numerator and denominator); a mean with nothing left is ``NaN``.
  A difference involving a missing entry is missing.
* The zero-shot row never enters UT-Acc, BWT, forgetting, Transfer, Avg or Last: those
  use only trained rows, exactly as docs/protocols.md defines them.

All indices in docstrings are 0-indexed; docs/protocols.md writes them 1-indexed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from . import metric_names as names

__all__ = [
    "matrix_rows",
    "ut_acc",
    "bwt",
    "final_bwt",
    "forgetting",
    "mtil_summary",
    "cil_summary",
    "a_acc",
    "summarize",
]

_MATRIX_KEYS = ("ut_acc", "bwt", "bwt_paper", "forgetting", "transfer", "avg", "last")


def _nanmean(x, axis=None):
    """``np.nanmean`` without the 'Mean of empty slice' warning (all-NaN -> NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.asarray(x, dtype=float), axis=axis)


def _nanmax(x, axis=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmax(np.asarray(x, dtype=float), axis=axis)


def matrix_rows(acc, has_zero_shot_row: bool = False) -> tuple[np.ndarray | None, np.ndarray]:
    """Split ``acc`` into ``(zero_shot_row or None, trained_rows)``.

    ``has_zero_shot_row=True``: ``acc[0]`` is the zero-shot row (length T) and the rest are
    trained rows. Trained rows must number ``1 <= R <= T``; raises ``ValueError`` otherwise.
    """
    a = np.asarray(acc, dtype=float)
    if a.ndim != 2:
        raise ValueError(f"accuracy matrix must be 2-D, got shape {a.shape}")
    zs = None
    if has_zero_shot_row:
        if a.shape[0] < 2:
            raise ValueError(f"matrix with a zero-shot row needs >= 2 rows, got shape {a.shape}")
        zs, a = a[0].copy(), a[1:]
    rows, cols = a.shape
    if cols < 1 or rows < 1 or rows > cols:
        raise ValueError(
            f"trained rows must satisfy 1 <= rows <= columns, got {rows} x {cols}"
            + ("" if has_zero_shot_row else " (pass has_zero_shot_row=True for (T+1, T))")
        )
    return zs, a


def ut_acc(acc, *, has_zero_shot_row: bool = False) -> np.ndarray:
    """UT-Acc_t = mean_{i<=t} a[t][i] for every trained row t (paper, MST), shape (R,)."""
    _, a = matrix_rows(acc, has_zero_shot_row)
    return np.array([_nanmean(a[t, : t + 1]) for t in range(a.shape[0])], dtype=float)


def bwt(acc, variant: str = "standard", *, has_zero_shot_row: bool = False) -> np.ndarray:
    """BWT_t for every trained row t, shape (R,).

    ``"standard"`` (GEM): BWT_t = (1/t) * sum_{i<t} (a[t][i] - a[i][i]); NaN at t = 0.
    ``"paper"`` (the CL-CLIP authors' code): the same sum divided by t + 1; 0 at t = 0.
    With missing entries the standard value is the nan-mean of the available differences
    and the paper value is that mean times t / (t + 1).
    """
    if variant not in ("standard", "paper"):
        raise ValueError(f"variant must be 'standard' or 'paper', got {variant!r}")
    _, a = matrix_rows(acc, has_zero_shot_row)
    out = np.empty(a.shape[0], dtype=float)
    for t in range(a.shape[0]):
        if t == 0:
            out[t] = math.nan if variant == "standard" else 0.0
            continue
        mean = _nanmean(a[t, :t] - np.diag(a)[:t])
        out[t] = mean if variant == "standard" else mean * t / (t + 1)
    return out


def final_bwt(acc, *, has_zero_shot_row: bool = False) -> float:
    """BWT = mean_{i<T-1} (a[T-1][i] - a[i][i]) with T-1 the last trained row (ZSCL/GEM).

    NaN when there is a single trained row.
    """
    _, a = matrix_rows(acc, has_zero_shot_row)
    last = a.shape[0] - 1
    if last == 0:
        return math.nan
    return float(_nanmean(a[last, :last] - np.diag(a)[:last]))


def forgetting(acc, *, has_zero_shot_row: bool = False) -> float:
    """Forgetting = mean_{i<T-1} (max_{t<T-1} a[t][i] - a[T-1][i]) (ZSCL, docs/protocols.md).

    The max runs over all earlier trained rows (also t < i), never the zero-shot row.
    NaN when there is a single trained row.
    """
    _, a = matrix_rows(acc, has_zero_shot_row)
    last = a.shape[0] - 1
    if last == 0:
        return math.nan
    best = _nanmax(a[:last, :last], axis=0)
    return float(_nanmean(best - a[last, :last]))


def _transfer(a: np.ndarray) -> float:
    """Transfer = mean_{i=1..T-1} mean_{t<i} a[t][i] (trained rows only)."""
    cols = [_nanmean(a[:i, i]) for i in range(1, a.shape[1])]
    return float(_nanmean(cols)) if cols else math.nan


def mtil_summary(acc, zero_shot_row=None, *, has_zero_shot_row: bool = False) -> dict[str, float]:
    """ZSCL's MTIL numbers from the trained rows of ``acc`` (docs/protocols.md, section 2).

    Keys:
      ``transfer``   mean over i = 1..T-1 of mean_{t<i} a[t][i] -- trained rows only; the
                     zero-shot row is NOT used (docs/protocols.md). NaN if T = 1
                     or no future column was evaluated.
      ``avg``        mean over i of (mean over all trained rows t of a[t][i]).
      ``last``       mean_i a[T-1][i] (last trained row, all columns).
      ``bwt``        :func:`final_bwt`.
      ``forgetting`` :func:`forgetting`.
    When a zero-shot row is known (``zero_shot_row`` of length T, or
    ``has_zero_shot_row=True``) two reference numbers are added:
      ``zero_shot_transfer`` mean_{i>=1} zs[i] (what Transfer would be with no training);
      ``zero_shot_avg``      mean_i zs[i].
    """
    zs, a = matrix_rows(acc, has_zero_shot_row)
    if zero_shot_row is not None:
        if zs is not None:
            raise ValueError("zero-shot row given twice (argument and has_zero_shot_row=True)")
        zs = np.asarray(zero_shot_row, dtype=float)
        if zs.shape != (a.shape[1],):
            raise ValueError(f"zero_shot_row must have shape ({a.shape[1]},), got {zs.shape}")
    out = {
        "transfer": _transfer(a),
        "avg": float(_nanmean(_nanmean(a, axis=0))),
        "last": float(_nanmean(a[-1])),
        "bwt": final_bwt(a),
        "forgetting": forgetting(a),
    }
    if zs is not None:
        out["zero_shot_transfer"] = float(_nanmean(zs[1:])) if zs.size > 1 else math.nan
        out["zero_shot_avg"] = float(_nanmean(zs))
    return out


def cil_summary(acc_per_step: Sequence[float]) -> dict[str, float]:
    """ZSCL's CIL numbers: ``avg`` = mean_t acc_t (NaN-skipping), ``last`` = acc_T.

    acc_t is the accuracy on all classes seen up to step t. Empty input gives NaN for both.
    """
    a = np.asarray(acc_per_step, dtype=float).reshape(-1)
    if a.size == 0:
        return {"avg": math.nan, "last": math.nan}
    return {"avg": float(_nanmean(a)), "last": float(a[-1])}


def a_acc(ut, zs):
    """A-Acc = (UT-Acc + ZS-Acc) / 2 (paper). Floats give a float, arrays an array."""
    r = (np.asarray(ut, dtype=float) + np.asarray(zs, dtype=float)) / 2.0
    return float(r) if r.ndim == 0 else r


def summarize(
    acc,
    zero_shot_row=None,
    probes: Mapping[str, float] | None = None,
    probe_zero_shot: Mapping[str, float] | None = None,
    *,
    has_zero_shot_row: bool = False,
) -> dict[str, float]:
    """Flat, JSON-serialisable run summary (plain Python floats, NaN when undefined).

    Keys from the matrix (last trained row = "final"):
      ``ut_acc``      final UT-Acc_t (:func:`ut_acc`);
      ``bwt``         final standard BWT_t (= :func:`final_bwt` without missing entries);
      ``bwt_paper``   final BWT_t of the authors' code (divides by t + 1);
      ``forgetting``, ``transfer``, ``avg``, ``last``  as in :func:`mtil_summary`;
      ``zero_shot_transfer``, ``zero_shot_avg``  only when a zero-shot row is given.
    Keys from the probes (``probes``: name -> final value, e.g. zero-shot accuracy or a
    retrieval recall):
      ``<name>``        the final value;
      ``delta/<name>``  final - ``probe_zero_shot[name]``; left out when that is missing.
    A probe name equal to a matrix key raises ``ValueError``.
    """
    zs_given, a = matrix_rows(acc, has_zero_shot_row)
    if zero_shot_row is not None and zs_given is not None:
        raise ValueError("zero-shot row given twice (argument and has_zero_shot_row=True)")
    mtil = mtil_summary(a, zero_shot_row if zero_shot_row is not None else zs_given)
    out: dict[str, float] = {
        "ut_acc": float(ut_acc(a)[-1]),
        "bwt": float(bwt(a, "standard")[-1]),
        "bwt_paper": float(bwt(a, "paper")[-1]),
        "forgetting": mtil["forgetting"],
        "transfer": mtil["transfer"],
        "avg": mtil["avg"],
        "last": mtil["last"],
    }
    for key in ("zero_shot_transfer", "zero_shot_avg"):
        if key in mtil:
            out[key] = mtil[key]
    probe_zero_shot = probe_zero_shot or {}
    for name, value in (probes or {}).items():
        if name in out or names.is_delta(name):
            raise ValueError(f"probe name {name!r} clashes with a summary key")
        out[name] = float(value)
        if probe_zero_shot.get(name) is not None:
            out[names.delta(name)] = float(value) - float(probe_zero_shot[name])
    return out
