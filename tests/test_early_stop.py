"""A stop signal during a job's start-up is not lost: submitit's SIGTERM handler only logs it, so a
`scancel` while the job loads its data and weights used to be ignored and the job trained on."""

from __future__ import annotations

import os
import signal

import pytest
from conftest import TEST_PRESET, compose_config

from clipcl_runner import preemption


@pytest.fixture
def submitit_like_sigterm():
    """SIGTERM handled the way submitit's job environment does (logged, "bypassed"); restored after."""
    bypassed = []
    original = signal.signal(signal.SIGTERM, lambda signum, frame: bypassed.append(signum))
    yield bypassed
    signal.signal(signal.SIGTERM, original)
    preemption._early_stops.clear()


def test_a_sigterm_before_the_runner_listens_reaches_its_stop_request(submitit_like_sigterm):
    preemption.catch_early_stops()
    os.kill(os.getpid(), signal.SIGTERM)
    assert submitit_like_sigterm == []  # ours caught it, not the bypass
    stop = preemption.StopRequest()
    try:
        assert stop.requested and stop.signum == signal.SIGTERM
    finally:
        stop.restore()
    later = preemption.StopRequest()
    later.restore()  # every StopRequest gives its handlers back (a leftover one would swallow later signals)
    assert later.signum is None  # remembered once, for the run it came to


def test_without_a_handler_sigterm_keeps_its_default_action(monkeypatch):
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a plain run: the signal ends the process
    preemption.catch_early_stops()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_run_stopped_during_start_up_exits_before_any_work(pretrained_test_clip, submitit_like_sigterm, tmp_path):
    from clipcl_runner.runner import run

    cfg = compose_config(*TEST_PRESET, "logger=none", output_dir=tmp_path)
    preemption.catch_early_stops()
    os.kill(os.getpid(), signal.SIGTERM)  # the scancel, while the job starts
    with pytest.raises(SystemExit) as stopped:
        run(cfg, tmp_path / "run")
    assert stopped.value.code == 128 + signal.SIGTERM
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # no evaluation, no training
    assert signal.getsignal(signal.SIGTERM) is preemption._remember_early_stop  # the runner gave it back
