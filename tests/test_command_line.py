"""Command lines Hydra would run silently wrong or answer with a traceback are refused first, in one line."""

from __future__ import annotations

import pytest
from conftest import run_cli


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ("experiment=synthetic_test", "experiment=synthetic_demo"),
            "clipcl: error: experiment is chosen 2 times (experiment=synthetic_test experiment=synthetic_demo); "
            "Hydra would silently keep the last. To apply several presets in order, list them: experiment=[a,b].",
        ),
        (
            ("-m", "method=lwf,finetune", "--cfg", "job"),
            "clipcl: error: --cfg prints one run's config and cannot be combined with -m. Preview a sweep's jobs "
            "with `clipcl-preflight -m <the same overrides>`, or one job's config with `clipcl <its overrides> --cfg job`.",
        ),
    ],
)
def test_refused_before_hydra_with_one_line(tmp_path, args, expected):
    done = run_cli(*args, f"paths.output_dir={tmp_path}", timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == expected
    assert not any(tmp_path.iterdir())  # nothing was created


def test_a_list_of_presets_and_other_keys_given_twice_are_accepted(tmp_path):
    """Other keys keep Hydra's rule (the last wins): scripts build a command line and append overrides."""
    args = ("experiment=[synthetic_test,synthetic_demo]", "seed=2", "seed=3", "logger=wandb", "logger=none")
    done = run_cli(*args, "--cfg", "job", timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "seed: 3" in done.stdout and "- demo" in done.stdout  # synthetic_demo applied after synthetic_test
    assert "mode: disabled" in done.stdout  # logger=none, the last one
