"""Every metric name of a run: built, parsed and labelled here, and nowhere else.

A name is ``<kind's template>`` (``task/T1/acc``, ``zs/colour/acc``, ``ret/coco5k/i2t_r1``, ``cil/acc``)
or ``delta/<probe metric>`` (the change of a probe since the zero-shot row, a summary key); the
summary's scalars (``ut_acc``, ``bwt``, ...) are plain keys without a ``/``. Evaluation, the run
summary, the plots, the runner's log line, the W&B dashboard and the report all go through this
module, so the names in metrics.jsonl, summary.json and W&B stay one convention.

A new probe kind is one ``register_kind`` call (or one entry in ``KINDS``): its template, its label
and whether it is a probe (plotted over stages, given a ``delta/`` in the summary, shown on the
dashboard). Import-light on purpose (no torch, no pandas): the runner, the report and the GPU image
all import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DELTA = "delta/"  # prefix of a probe's change since the zero-shot row (summary keys)
CL_SERIES = "cl/"  # prefix of the summary-so-far series logged to W&B at each stage end
# summary.json keys that name metrics rather than hold one: the eval protocol's choice for the report
HEADLINE = "headline"  # list of summary keys: the report's table columns
PLOT_METRIC = "plot_metric"  # the metric the report's comparison figure plots over stages
FIELDS = ("stage", "probe", "direction", "k")  # what a template may hold: {stage}, {probe}, ...
_FIELD_PATTERNS = {"k": r"\d+", "direction": r"i2t|t2i"}  # any other field: one path segment


@dataclass(frozen=True)
class MetricName:
    """A parsed metric name: its kind and the fields its template holds (the others are None)."""

    kind: str
    stage: str | None = None
    probe: str | None = None
    direction: str | None = None
    k: int | None = None
    delta: bool = False  # ``delta/<name>``: the change since the zero-shot row


@dataclass(frozen=True)
class Kind:
    """One family of metric names. ``template`` uses the fields of ``FIELDS`` in braces; ``label``
    is a format string on the same fields (the report's and figures' short label); ``probe``: the
    metric of a probe run on the model after every stage (plotted over stages, ``delta/`` in the
    summary, on the dashboard)."""

    template: str
    label: str
    probe: bool = False
    pattern: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = re.findall(r"\{(\w+)\}", self.template)
        unknown = [name for name in names if name not in FIELDS]
        if unknown:
            raise ValueError(f"metric template {self.template!r}: unknown field(s) {unknown}; use {FIELDS}")
        parts = re.split(r"\{(\w+)\}", self.template)  # literal, field, literal, field, ...
        regex = "".join(
            re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_FIELD_PATTERNS.get(part, '[^/]+')})"
            for i, part in enumerate(parts)
        )
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))


ZERO_SHOT, RETRIEVAL, TASK, TASK_MEAN, CIL = "zs", "ret", "task", "task_mean", "cil"
KINDS: dict[str, Kind] = {
    TASK: Kind("task/{stage}/acc", "task {stage} acc"),
    # the report's derived per-row metric: the mean over the row's task/<stage>/acc (never logged)
    TASK_MEAN: Kind("task/mean", "mean acc over all tasks"),
    # with eval.task_head=seen: accuracy on every seen class's test images (ZSCL's CIL acc_t)
    CIL: Kind("cil/acc", "acc on the classes seen so far"),
    ZERO_SHOT: Kind("zs/{probe}/acc", "{probe}", probe=True),
    RETRIEVAL: Kind("ret/{probe}/{direction}_r{k}", "{probe} {direction} R@{k}", probe=True),
}

# Labels of the summary's scalars, and of names whose label is not the kind's rule (the synthetic
# protocol's table: one retrieval probe, so its name is left out; "colour+shape" reads better).
LABELS = {
    "ut_acc": "final mean task acc",
    "bwt": "BWT",
    "bwt_paper": "BWT (paper)",
    "forgetting": "forgetting",
    "transfer": "transfer",
    "avg": "avg acc",
    "last": "last",
    "a_acc": "A-Acc",
    "cil_avg": "CIL avg",
    "cil_last": "CIL last",
    "delta/ret/heldout/i2t_r1": "Δ i2t R@1",
    "delta/ret/heldout/t2i_r1": "Δ t2i R@1",
    "delta/zs/colour_shape/acc": "Δ colour+shape",
}


def register_kind(name: str, template: str, label: str, probe: bool = False) -> Kind:
    """Add a kind of metric name (a new probe kind: ``register_kind("cap", "cap/{probe}/bleu",
    "{probe} BLEU", probe=True)``); its names then parse, label, plot and get deltas like the others."""
    kind = Kind(template, label, probe)
    clash = next((other for other, known in KINDS.items() if known.template == template and other != name), None)
    if clash:
        raise ValueError(f"metric template {template!r} is kind {clash!r} already")
    KINDS[name] = kind
    return kind


def build(kind: str, **fields: object) -> str:
    """The name of ``kind`` with its template's fields filled in."""
    return KINDS[kind].template.format(**fields)


def task_acc(stage: str) -> str:
    return build(TASK, stage=stage)


def zero_shot_acc(probe: str) -> str:
    return build(ZERO_SHOT, probe=probe)


def retrieval(probe: str, direction: str, k: int) -> str:
    return build(RETRIEVAL, probe=probe, direction=direction, k=k)


def retrieval_of(probe: str, recall_key: str) -> str:
    """The name of a recall that ``retrieval.recall_at_k`` returns as ``i2t_r1`` (direction, k)."""
    match = re.fullmatch(rf"(?P<direction>{_FIELD_PATTERNS['direction']})_r(?P<k>\d+)", recall_key)
    if match is None:
        raise ValueError(f"{recall_key!r} is not a recall key (i2t_r<k> or t2i_r<k>)")
    return retrieval(probe, match["direction"], int(match["k"]))


CIL_ACC = build(CIL)
TASK_MEAN_ACC = build(TASK_MEAN)


def delta(name: str) -> str:
    """The change of probe metric ``name`` since the zero-shot row (a summary key)."""
    return DELTA + name


def cl_series(key: str) -> str:
    """The W&B series of summary key ``key`` over stage ends."""
    return CL_SERIES + key


def parse(name: str) -> MetricName | None:
    """The parsed metric name; None for a summary scalar (``ut_acc``) or any name of no kind."""
    is_delta = name.startswith(DELTA)
    body = name[len(DELTA) :] if is_delta else name
    for kind_name, kind in KINDS.items():
        match = kind.pattern.match(body)
        if match:
            fields = match.groupdict()
            k = fields.pop("k", None)
            return MetricName(kind_name, **fields, k=None if k is None else int(k), delta=is_delta)
    return None


def is_probe(name: str) -> bool:
    """A probe's own value (not its delta): ``zs/x/acc``, ``ret/x/i2t_r1``, any registered probe kind."""
    parsed = parse(name)
    return parsed is not None and not parsed.delta and KINDS[parsed.kind].probe


def is_delta(name: str) -> bool:
    return name.startswith(DELTA)


def is_task_acc(name: str) -> bool:
    parsed = parse(name)
    return parsed is not None and parsed.kind == TASK and not parsed.delta


def recall_k(name: str) -> int | None:
    """The k of a retrieval recall name (or its delta), None for any other name."""
    parsed = parse(name)
    return None if parsed is None else parsed.k


def is_scalar(name: str) -> bool:
    """A summary scalar (``ut_acc``, ``bwt``, ``cil_avg``, ...): no ``/`` in its name."""
    return "/" not in name


def kind_of(name: str) -> str | None:
    parsed = parse(name)
    return None if parsed is None else parsed.kind


def label(name: str) -> str:
    """Short human label: the known ones (``LABELS``), else the kind's label rule (``Δ `` in front
    of a delta): 'delta/zs/cifar100/acc' -> 'Δ cifar100', 'ret/coco/i2t_r1' -> 'coco i2t R@1';
    a name of no kind is its own label."""
    if name in LABELS:
        return LABELS[name]
    parsed = parse(name)
    if parsed is None:
        return f"Δ {name[len(DELTA) :]}" if is_delta(name) else name
    fields = {f: getattr(parsed, f) for f in FIELDS}
    text = KINDS[parsed.kind].label.format(**fields)
    return f"Δ {text}" if parsed.delta else text


def unknown(names: list[str] | tuple[str, ...]) -> list[str]:
    """The metric names among ``names`` that no kind builds (an evaluator's output must have none)."""
    return [name for name in names if "/" in name and parse(name) is None]
