"""The report's files for a fixed set of synthetic, MTIL and CIL run folders (tests/report_runs.py) stay
what they were (tests/golden/report_<protocol>/, written by the report before it became a package).
Text files compare exactly; the CSVs compare numbers to 1e-9 (pandas' groupby std may differ in the last bit)."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from report_runs import PROTOCOLS, make_protocol_runs, report_texts

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_report_files_match_the_golden_ones(protocol, tmp_path):
    texts = report_texts(make_protocol_runs(tmp_path / "runs", protocol), tmp_path / "out")
    golden = {name: (GOLDEN / f"report_{protocol}" / name).read_text(encoding="utf-8") for name in texts}
    assert texts["report.md"] == golden["report.md"]
    assert texts["summary.tex"] == golden["summary.tex"]
    for name in ("summary.csv", "runs.csv"):
        got, want = (pd.read_csv(io.StringIO(text)) for text in (texts[name], golden[name]))
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, atol=1e-12)
