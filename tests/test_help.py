"""`clipcl --help` explains every config group's options and the launchers (conf/hydra/default.yaml's hydra.help)."""

from __future__ import annotations

import re

from conftest import REPO, run_cli


def test_help_names_every_option_of_every_group_and_the_launchers():
    result = run_cli("--help", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    for group in ("experiment", "model", "method", "tasks", "eval", "reference", "trainer", "logger", "paths"):
        assert re.search(rf"^{group} ", text, re.M), group
        for option in sorted((REPO / "conf" / group).glob("*.yaml")):
            assert re.search(rf"\b{option.stem}\b", text), f"{group}={option.stem} is not described in --help"
    for launcher in sorted((REPO / "conf" / "hydra" / "launcher").glob("*.yaml")):
        assert f"hydra/launcher={launcher.stem}" in text
    assert "clipcl-report" in text and "== The composed config" in text
