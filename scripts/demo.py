"""The README's main job: finetune vs LwF vs VR-LwF on the synthetic world, then one comparison table.

Runs a real Hydra multirun through the `clipcl` entry point (pretraining the tiny CLIP first if
the cache has none), then aggregates the sweep with `clipcl-report`.

    python scripts/demo.py                 # 3 methods x 3 seeds
    python scripts/demo.py --seeds 0       # quicker: one seed
    python scripts/demo.py -- trainer.batch_size=64   # anything after -- goes to clipcl
    python scripts/demo.py --write-readme  # also put the table (and this machine, timing) into README.md

The README's demo table sits between ``<!-- demo-table:start -->`` and ``<!-- demo-table:end -->``
and is only ever written by ``--write-readme``, so it always shows what this code printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README_BLOCK = re.compile(r"(<!-- demo-table:start -->\n).*?(<!-- demo-table:end -->)", re.S)


def write_readme(table: str, seconds: float, methods: str, seeds: str) -> None:
    """Replace the README's demo table with this run's (the machine and the wall time are stated)."""
    readme = REPO / "README.md"
    text = readme.read_text()
    if not README_BLOCK.search(text):
        raise SystemExit(f"{readme} has no <!-- demo-table:start --> ... <!-- demo-table:end --> block to replace.")
    machine = f"{os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}"
    block = (
        f"`python scripts/demo.py --methods {methods} --seeds {seeds} --write-readme` on {machine}: "
        f"{seconds / 60:.1f} min including pretraining when the cache was empty.\n\n{table}\n"
    )
    readme.write_text(README_BLOCK.sub(lambda match: match.group(1) + block + match.group(2), text))
    print(f"wrote the table into {readme}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="finetune,lwf,vr_lwf")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--out", type=Path, default=REPO / "outputs" / "demo" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    )
    parser.add_argument("--write-readme", action="store_true", help="replace README.md's demo table with this run's")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, after --")
    args = parser.parse_args()

    started = time.perf_counter()
    command = [
        sys.executable,
        "-m",
        "clipcl_runner.cli",
        "-m",
        "experiment=synthetic_demo",
        f"method={args.methods}",
        f"seed={args.seeds}",
        f"hydra.sweep.dir={args.out}",
        "hydra.callbacks.sweep_report.enabled=false",  # the demo prints its own table below
        *args.overrides,
    ]
    print("$", " ".join(command[2:]), flush=True)
    if subprocess.run(command, cwd=REPO).returncode != 0:
        print(f"the sweep failed; finished runs are kept in {args.out}", file=sys.stderr)
        return 1

    from clipcl_runner.report import write_report

    report = write_report([args.out], args.out / "report")
    print(f"\n## {args.methods.replace(',', ' vs ')} on the synthetic world (mean ± std over seeds {args.seeds})\n")
    print(report["table"])
    print("\nΔ = after the last task minus the pretrained model (percentage points).")
    print(f"report and comparison plot: {args.out / 'report'}")
    seconds = time.perf_counter() - started
    print(f"demo took {seconds:.0f}s")
    if args.write_readme:
        write_readme(report["table"], seconds, args.methods, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
