"""metric_names: every kind builds, parses back and labels; a new probe kind goes end to end through
only its builder (here), its metric_names entry (``register_kind``) and the eval config (overrides)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TEST_PRESET, compose_config, tiny_run

from clipcl_runner import metric_names as names

# (name, builder, parsed, label): the labels are those the report and its golden files show
CASES = [
    ("task/T1/acc", lambda: names.task_acc("T1"), names.MetricName("task", stage="T1"), "task T1 acc"),
    (
        "zs/colour_shape/acc",
        lambda: names.zero_shot_acc("colour_shape"),
        names.MetricName("zs", probe="colour_shape"),
        "colour_shape",
    ),
    (
        "ret/coco1k/t2i_r10",
        lambda: names.retrieval("coco1k", "t2i", 10),
        names.MetricName("ret", probe="coco1k", direction="t2i", k=10),
        "coco1k t2i R@10",
    ),
    ("cil/acc", lambda: names.CIL_ACC, names.MetricName("cil"), "acc on the classes seen so far"),
    ("task/mean", lambda: names.TASK_MEAN_ACC, names.MetricName("task_mean"), "mean acc over all tasks"),
    (
        "delta/zs/cifar100/acc",
        lambda: names.delta(names.zero_shot_acc("cifar100")),
        names.MetricName("zs", probe="cifar100", delta=True),
        "Δ cifar100",
    ),
    (
        "delta/ret/coco/t2i_r5",
        lambda: names.delta(names.retrieval("coco", "t2i", 5)),
        names.MetricName("ret", probe="coco", direction="t2i", k=5, delta=True),
        "Δ coco t2i R@5",
    ),
    # the synthetic protocol's table: its one retrieval probe is not named, colour_shape reads colour+shape
    (
        "delta/ret/heldout/i2t_r1",
        lambda: names.delta(names.retrieval("heldout", "i2t", 1)),
        names.MetricName("ret", probe="heldout", direction="i2t", k=1, delta=True),
        "Δ i2t R@1",
    ),
    (
        "delta/zs/colour_shape/acc",
        lambda: names.delta(names.zero_shot_acc("colour_shape")),
        names.MetricName("zs", probe="colour_shape", delta=True),
        "Δ colour+shape",
    ),
]


@pytest.mark.parametrize("name,build,parsed,label", CASES, ids=[case[0] for case in CASES])
def test_build_parse_label_round_trip(name, build, parsed, label):
    assert build() == name
    assert names.parse(name) == parsed
    assert names.build(
        parsed.kind, **{f: getattr(parsed, f) for f in names.FIELDS if getattr(parsed, f) is not None}
    ) == (name.removeprefix("delta/"))
    assert names.label(name) == label


def test_predicates_and_scalars():
    assert names.is_probe("zs/x/acc") and names.is_probe("ret/x/i2t_r1")
    assert not names.is_probe("delta/zs/x/acc") and not names.is_probe("task/T1/acc") and not names.is_probe("cil/acc")
    assert names.is_delta("delta/zs/x/acc") and not names.is_delta("zs/x/acc")
    assert names.is_task_acc("task/T 1/acc") and not names.is_task_acc("task/mean")
    assert names.recall_k("delta/ret/x/i2t_r10") == 10 and names.recall_k("zs/x/acc") is None
    assert names.retrieval_of("coco", "i2t_r5") == "ret/coco/i2t_r5"
    with pytest.raises(ValueError, match="not a recall key"):
        names.retrieval_of("coco", "r5")
    # summary scalars and names of no kind parse to None and keep their label or their name
    for name, label in [("ut_acc", "final mean task acc"), ("cil_avg", "CIL avg"), ("train/loss", "train/loss")]:
        assert names.parse(name) is None and names.label(name) == label
    assert names.parse("zs/a/b/acc") is None and names.parse("ret/x/i2t_rx") is None
    assert names.unknown(["ut_acc", "zs/x/acc", "cap/x/bleu"]) == ["cap/x/bleu"]


@pytest.fixture
def caption_kind():
    """The toy probe kind's one metric_names entry, removed again after the test."""
    kind = names.register_kind("cap", "cap/{probe}/bleu", "{probe} BLEU", probe=True)
    yield kind
    names.KINDS.pop("cap")


def test_register_kind_refuses_unknown_fields_and_a_taken_template(caption_kind):
    assert names.parse("delta/cap/toy/bleu") == names.MetricName("cap", probe="toy", delta=True)
    assert names.label("delta/cap/toy/bleu") == "Δ toy BLEU" and names.is_probe("cap/toy/bleu")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['dataset'\]"):
        names.register_kind("bad", "bad/{dataset}/x", "{dataset}")
    with pytest.raises(ValueError, match="is kind 'zs' already"):
        names.register_kind("zs2", "zs/{probe}/acc", "{probe}")


class ToyCaptionProbe:
    """A new probe kind: image-caption agreement (100 x the mean cosine of each image and its caption),
    scored by itself through the evaluator's probe contract (``dataset`` and ``score``)."""

    def __init__(self, name, dataset, captions):
        self.name, self.dataset, self.captions = name, dataset, captions

    def metric(self) -> str:
        return names.build("cap", probe=self.name)

    def score(self, evaluator, model, features, labels) -> dict[str, float]:
        text = F.normalize(evaluator.encode_texts(model, self.captions), dim=-1)
        return {self.metric(): float(100.0 * (features * text).sum(dim=1).mean())}


def toy_caption_probe(clip, images: int = 40):
    """The toy probe's builder (``eval.probes.toy._target_``): the synthetic world's retrieval images,
    each with its first caption."""
    from clipcl_runner.data.synthetic import synthetic_probes

    retrieval = synthetic_probes(clip, 10, 10, 10, images, captions_per_image=1)[-1]
    first = {}
    for caption, image in zip(retrieval.captions, retrieval.text_to_image.tolist()):
        first.setdefault(image, caption)
    return ToyCaptionProbe("toy", retrieval.dataset, [first[i] for i in range(len(first))])


def test_an_unregistered_probe_kind_is_refused_with_the_fix():
    from clipcl_runner.data.stages import TensorImages
    from clipcl_runner.evaluation import Evaluator

    class Unregistered(ToyCaptionProbe):
        def metric(self) -> str:  # its author wrote the name by hand and registered no kind
            return f"cap/{self.name}/bleu"

    context = tiny_run(stages=1)
    probe = Unregistered("toy", TensorImages(torch.randn(4, 3, 32, 32), torch.zeros(4)), ["a"] * 4)
    evaluator = Evaluator(context.stages, [probe], context.tokenizer, context.device)
    with pytest.raises(ValueError, match=r"\['cap/toy/bleu'\] are of no metric kind.*metric_names.py"):
        evaluator(context.model, 0)


def test_a_toy_probe_kind_through_builder_registry_and_eval_config(pretrained_test_clip, caption_kind, tmp_path):
    from clipcl_runner import report
    from clipcl_runner.plots import probe_metrics
    from clipcl_runner.report.figures import comparison_metrics
    from clipcl_runner.runner import run

    run_dir = tmp_path / "sweep" / "0_toy"
    overrides = (
        "logger=none",
        "tasks.num_stages=1",
        "tasks.epochs=1",
        "eval.probes.synthetic=null",
        "+eval.probes.toy={_target_:test_metric_names.toy_caption_probe}",
        "eval.headline=[ut_acc,delta/cap/toy/bleu]",
        "eval.plot_metric=cap/toy/bleu",
    )
    run(compose_config(*TEST_PRESET, *overrides, output_dir=run_dir.parent), run_dir)

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["stage"] for row in rows] == [0, 1]
    before, after = rows[0]["cap/toy/bleu"], rows[1]["cap/toy/bleu"]
    assert -100.0 <= before <= 100.0 and after != before  # a cosine in percent that training moved
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["headline"] == ["ut_acc", "delta/cap/toy/bleu"] and summary["plot_metric"] == "cap/toy/bleu"
    assert summary["delta/cap/toy/bleu"] == pytest.approx(after - before)
    assert summary["cap/toy/bleu"] == pytest.approx(after)
    assert probe_metrics(rows) == ["cap/toy/bleu"]  # the run's probes.png plots it

    out = tmp_path / "report"
    result = report.write_report([run_dir.parent], out)
    header = result["table"].splitlines()[0]
    assert header == "| method | final mean task acc | Δ toy BLEU | n |", header
    runs, _ = report.load_runs(report.find_runs([run_dir.parent]))
    assert "headline" not in runs.columns and "plot_metric" not in runs.columns
    assert comparison_metrics(runs) == ("ut_acc", "delta/cap/toy/bleu", "cap/toy/bleu")


def _summary_with(path: Path, **fields) -> None:
    summary = json.loads(path.read_text())
    path.write_text(json.dumps({**summary, **fields}, indent=2, sort_keys=True))


@pytest.mark.parametrize("protocol", ["synthetic", "mtil", "cil"])
def test_eval_configs_headline_is_the_reports_choice_for_older_runs(protocol, tmp_path):
    """The golden run folders carry no headline: written in from conf/eval/<protocol>.yaml, the report
    (table, LaTeX, figure metrics) is the golden one."""
    from report_runs import make_protocol_runs, report_texts
    from test_report_golden import GOLDEN

    from clipcl_runner import report
    from clipcl_runner.report.figures import comparison_metrics

    cfg = compose_config(*TEST_PRESET, f"eval={protocol}")
    headline, plot_metric = list(cfg.eval.headline), cfg.eval.plot_metric
    plain = make_protocol_runs(tmp_path / "plain", protocol)
    named = make_protocol_runs(tmp_path / "named", protocol)
    for path in named.glob("*/summary.json"):
        _summary_with(path, headline=headline, plot_metric=plot_metric)

    texts = report_texts(named, tmp_path / "out")
    for name in ("report.md", "summary.tex"):
        assert texts[name] == (GOLDEN / f"report_{protocol}" / name).read_text(encoding="utf-8")
    runs_named, _ = report.load_runs(report.find_runs([named]))
    runs_plain, _ = report.load_runs(report.find_runs([plain]))
    assert runs_named.attrs["headline"] == headline and "headline" not in runs_plain.attrs
    assert comparison_metrics(runs_named) == comparison_metrics(runs_plain)
    assert comparison_metrics(runs_named)[2] == plot_metric


def test_a_headline_of_its_own_sets_the_table(tmp_path):
    from report_runs import make_protocol_runs, report_texts

    sweep = make_protocol_runs(tmp_path, "mtil")
    for path in sweep.glob("*/summary.json"):
        _summary_with(path, headline=["bwt_paper", "not_in_the_summary", "ut_acc"])
    table = report_texts(sweep, tmp_path / "out")["report.md"]
    assert "| method | method.alpha | BWT (paper) | final mean task acc | n |" in table
