"""The README's main job: finetune vs LwF vs VR-LwF on the synthetic world, then one comparison table.

Runs a real Hydra multirun through the `clipcl` entry point (pretraining the tiny CLIP first if
the cache has none), then aggregates the sweep with `clipcl-report`.

    python scripts/demo.py                 # 3 methods x 3 seeds
    python scripts/demo.py --seeds 0       # quicker: one seed
    python scripts/demo.py -- trainer.batch_size=64   # anything after -- goes to clipcl
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="finetune,lwf,vr_lwf")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "demo" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, after --")
    args = parser.parse_args()

    started = time.perf_counter()
    command = [
        sys.executable, "-m", "clipcl_runner.cli", "-m", "experiment=synthetic_demo",
        f"method={args.methods}", f"seed={args.seeds}", f"hydra.sweep.dir={args.out}", *args.overrides,
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
    print(f"demo took {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
