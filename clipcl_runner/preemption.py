"""Stop at a step boundary on a preemption signal or Ctrl-C, checkpoint, then hand over to whoever owns the signal.

SLURM (through submitit) sends SIGUSR2 before a timeout or preemption; submitit's handler
requeues the job and exits. ``scancel`` and the end of a job send SIGTERM to every process of
the job step, DataLoader workers included. Saving inside a signal handler could catch the
optimiser half way through an update, so our handler only raises a flag: the training loop
checks it after each step, writes a checkpoint, and then calls the previous handler (submitit's
requeue), or exits when there is none. Ctrl-C (SIGINT) does the same and exits with status 130,
without a traceback; a second Ctrl-C interrupts at once.

The main process owns shutdown: DataLoader workers must ignore SIGTERM and SIGINT
(``ignore_stop_signals`` as their ``worker_init_fn``), otherwise they die first and PyTorch raises
"DataLoader worker killed" in the main process wherever it is, even half way through a checkpoint.
"""

from __future__ import annotations

import logging
import signal
import sys

log = logging.getLogger(__name__)
DEFAULT_SIGNALS = ("SIGUSR2", "SIGTERM", "SIGINT")
WORKER_IGNORED = (signal.SIGTERM, signal.SIGINT)
_worker_stops_seen = 0  # per worker process (each has its own copy)


def _worker_stop(signum, frame) -> None:
    """The first SIGTERM/SIGINT is the one sent to the whole process group: ignored (the main process
    checkpoints and stops). A later SIGTERM is the main process ending its workers (multiprocessing's
    terminate() at exit): obeyed, or the main process would wait for this worker forever."""
    global _worker_stops_seen
    _worker_stops_seen += 1
    if _worker_stops_seen > 1 and signum == signal.SIGTERM:
        raise SystemExit(0)


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """``worker_init_fn`` of every DataLoader: the workers outlive a SIGTERM/SIGINT sent to the whole
    process group, so the main process can checkpoint; they end when the main process closes them
    (or, if it is killed, when they notice their parent is gone)."""
    for signum in WORKER_IGNORED:
        signal.signal(signum, _worker_stop)


_early_stops: list[int] = []  # SIGTERMs received before the runner's StopRequest existed


def _remember_early_stop(signum, frame) -> None:
    log.warning("received %s during start-up: the run stops before it evaluates or trains", signal.Signals(signum).name)
    _early_stops.append(signum)


def catch_early_stops() -> None:
    """Remember a SIGTERM that arrives before the runner listens for signals (call it first thing in a job).

    Inside a submitit job SIGTERM's handler only logs it (submitit "bypasses" it: SLURM sends it ahead of
    a preemption's requeue signal), so a ``scancel`` while the job loads its data and weights was lost
    and the job went on to train. Installed only where such a handler is in place: elsewhere SIGTERM's
    default action already ends the process at once."""
    current = signal.getsignal(signal.SIGTERM)
    if current in (signal.SIG_DFL, signal.SIG_IGN, None) or current is _remember_early_stop:
        return
    try:
        signal.signal(signal.SIGTERM, _remember_early_stop)
    except ValueError:  # not the main thread: no signal handling there
        pass


class StopRequest:
    def __init__(self, signals: tuple[str, ...] = DEFAULT_SIGNALS) -> None:
        self.signum: int | None = _early_stops[-1] if _early_stops else None  # one received during start-up
        _early_stops.clear()
        self._previous: dict[int, object] = {}
        for name in signals:
            signum = getattr(signal, name)
            try:
                self._previous[signum] = signal.signal(signum, self._flag)
            except ValueError:  # not the main thread (e.g. a joblib worker): no signal handling there
                log.debug("cannot install a %s handler outside the main thread", name)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _flag(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:  # Ctrl-C twice: stop now
            raise KeyboardInterrupt
        log.warning(
            "received %s: will checkpoint at the next step boundary%s",
            signal.Signals(signum).name,
            " (Ctrl-C again to stop without it)" if signum == signal.SIGINT else "",
        )
        self.signum = signum

    def hand_over(self) -> None:
        """Call the handler that was there before ours (submitit requeues and exits), else exit."""
        # Another rank of a distributed run may have been signalled instead: stop the same way.
        signum, self.signum = self.signum or signal.SIGTERM, None
        previous = self._previous.get(signum)
        self.restore()
        if callable(previous) and previous not in (signal.default_int_handler, _remember_early_stop):
            previous(signum, None)
            if signum == signal.SIGTERM:  # submitit only logs SIGTERM; the job is about to be killed anyway
                sys.exit(128 + signum)
            return
        log.warning("stopped on %s after checkpointing; continue with resume=true", signal.Signals(signum).name)
        sys.exit(128 + signum)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        self._previous = {}
