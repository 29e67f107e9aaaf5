"""Stop at a step boundary on a preemption signal, checkpoint, then hand over to whoever owns the signal.

SLURM (through submitit) sends SIGUSR2 before a timeout or preemption; submitit's handler
requeues the job and exits. Saving inside a signal handler could catch the optimiser half
way through an update, so our handler only raises a flag: the training loop checks it after
each step, writes a checkpoint, and then calls the previous handler (submitit's requeue),
or exits when there is none.
"""
from __future__ import annotations

import logging
import signal
import sys

log = logging.getLogger(__name__)
DEFAULT_SIGNALS = ("SIGUSR2", "SIGTERM")


class StopRequest:
    def __init__(self, signals=DEFAULT_SIGNALS):
        self.signum: int | None = None
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
        log.warning("received %s: will checkpoint at the next step boundary", signal.Signals(signum).name)
        self.signum = signum

    def hand_over(self) -> None:
        """Call the handler that was there before ours (submitit requeues and exits), else exit."""
        # Another rank of a distributed run may have been signalled instead: stop the same way.
        signum, self.signum = self.signum or signal.SIGTERM, None
        previous = self._previous.get(signum)
        self.restore()
        if callable(previous):
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
