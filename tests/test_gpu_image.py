"""The GPU check works the first time: scripts/gpu_check.sh run in a simulated GPU image (issue 15).

The GPU machine has Python 3.12 with torch, torchvision, timm and transformers (and their
dependencies) and nothing else; the check carries the wheels ``gpu_check.sh --prepare`` collects.
The slow tests build that image here -- a fresh virtualenv (no system site-packages) holding only
those four packages, from this machine's local package index, Python of this machine -- prepare the
wheels for this Python, and run the script's ``--cpu-smoke`` mode in it: the same wheel install,
imports, CUDA tests (skipping), the bench's train section and the runner end to end on the CPU.
The fast tests keep the heavy optional dependencies off the runner's import path.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CACHE, REPO

SCRIPT = REPO / "scripts" / "gpu_check.sh"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
IMAGE = CACHE / "gpu_image" / f"py{PYTHON_VERSION}"  # built once per machine, never installed into afterwards
# What the GPU machine has preinstalled; torch and torchvision at this checkout's versions (they lie on disk here).
IMAGE_PACKAGES = [
    f"torch=={importlib.metadata.version('torch')}",
    f"torchvision=={importlib.metadata.version('torchvision')}",
    "timm",
    "transformers",
]
NOT_IN_IMAGE = ("pandas", "matplotlib", "scipy", "wandb", "submitit", "open_clip", "hydra", "omegaconf", "pytest")
CARRY_LIMIT = 64 * 2**20


# -- fast: optional dependencies stay off the runner's path -------------------------------------------
def test_runner_modules_import_without_pandas_matplotlib_scipy():
    code = (
        "import sys, clipcl_runner.cli, clipcl_runner.runner, clipcl_runner.run_summary, clipcl_runner.plots; "
        "print(sorted(m for m in ('pandas', 'matplotlib', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"


def test_figures_are_skipped_with_a_warning_without_matplotlib(tmp_path, monkeypatch, caplog):
    from clipcl_runner.plots import plot_probes

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    rows = [
        {"stage": 0, "stage_name": "zero-shot", "zs/x/acc": 50.0},
        {"stage": 1, "stage_name": "T1", "zs/x/acc": 40.0},
    ]
    path = plot_probes(rows, tmp_path / "probes.png")
    assert path == tmp_path / "probes.png" and not path.exists()
    assert "matplotlib is not installed" in caplog.text


def test_the_script_parses_and_refuses_unknown_modes():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    refused = subprocess.run(["bash", str(SCRIPT), "--gpu"], capture_output=True, text=True)
    assert refused.returncode == 2 and "usage" in refused.stderr


# -- slow: the simulated GPU image ----------------------------------------------------------------------
def simulated_image() -> Path:
    """A venv with only the GPU image's packages (a few minutes the first time: torch is a CUDA build)."""
    python = IMAGE / "bin" / "python"
    if (IMAGE / "complete").exists():
        return python
    building = IMAGE.with_name(IMAGE.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)  # no system site-packages
    subprocess.run(
        [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", *IMAGE_PACKAGES], check=True, timeout=1800
    )
    shutil.rmtree(IMAGE, ignore_errors=True)
    building.rename(IMAGE)  # moved only once complete; its python is used as `python -m pip`, never bin/pip
    (IMAGE / "complete").write_text("\n".join(IMAGE_PACKAGES) + "\n")
    return python


def script(*args: str, env: dict[str, str], timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def image_and_wheels(tmp_path_factory):
    python = simulated_image()
    code = f"import importlib.util as u; print([m for m in {NOT_IN_IMAGE!r} if u.find_spec(m)])"
    present = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout
    assert present.strip() == "[]", f"the simulated GPU image is not bare: {present}"
    wheels = tmp_path_factory.mktemp("gpu_wheels")
    prepared = script("--prepare", env={"GPU_WHEELS": str(wheels), "GPU_PYTHON_VERSION": PYTHON_VERSION}, timeout=600)
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    return python, wheels, prepared.stdout


def smoke(python: Path, wheels: Path, folder: Path) -> tuple[subprocess.CompletedProcess, str]:
    env = {
        "PYTHON": str(python),
        "GPU_WHEELS": str(wheels),
        "GPU_SITE": str(folder / "site"),
        "OUT": str(folder / "out"),
        "GPU_CHECK_BUDGET_S": "1000",
    }
    done = script("--cpu-smoke", env=env)
    verdict = folder / "out" / "verdict.md"
    return done, verdict.read_text() if verdict.exists() else ""


@pytest.mark.slow
def test_gpu_check_runs_in_the_simulated_gpu_image(image_and_wheels, tmp_path):
    python, wheels, prepared = image_and_wheels
    size = sum(path.stat().st_size for path in wheels.iterdir())
    print(prepared.strip().splitlines()[-1])
    assert size < CARRY_LIMIT, f"the prepared wheels ({size / 2**20:.1f} MiB) exceed the device tool's carry limit"
    done, verdict = smoke(python, wheels, tmp_path)
    assert done.returncode == 0, verdict + done.stdout[-4000:] + done.stderr[-2000:]
    for section in ("install_wheels", "imports", "cuda_tests", "bench_cpu_train", "runner_cpu"):
        assert f"| {section} | ok" in verdict, verdict
    summary = json.loads((tmp_path / "out" / "run_cpu_fp16" / "summary.json").read_text())
    assert summary["stages"] == 1
    assert json.loads((tmp_path / "out" / "bench_cpu.json").read_text())


@pytest.mark.slow
def test_gpu_check_fails_when_a_carried_wheel_is_missing(image_and_wheels, tmp_path):
    python, wheels, _ = image_and_wheels
    fewer = tmp_path / "wheels"
    fewer.mkdir()
    removed = [path for path in wheels.iterdir() if path.name.startswith("omegaconf-")]
    assert removed, sorted(path.name for path in wheels.iterdir())
    for path in wheels.iterdir():
        if path not in removed:
            shutil.copy(path, fewer / path.name)
    done, verdict = smoke(python, fewer, tmp_path)
    assert done.returncode != 0
    assert "| imports | FAILED" in verdict and "No module named 'omegaconf'" in verdict, verdict
    assert "| runner_cpu | FAILED" in verdict, verdict
