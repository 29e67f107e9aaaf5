#!/usr/bin/env bash
# Every CUDA measurement in one short run, for a session that has the GPU machine (one H200,
# Python 3.12, torch preinstalled, no open_clip, no internet). Prepare the wheels here first:
#
#   bash scripts/gpu_check.sh --prepare        # downloads pure-Python wheels into .cache/gpu_wheels
#
# then run on the device machine, carrying that folder (results land in $OUT, default outputs/gpu):
#
#   bash scripts/gpu_check.sh                  # (device tool: carry [".cache/gpu_wheels"], timeout ~540 s)
#
# It installs the wheels without touching torch, then runs: the CUDA tests (AMP paths), the
# benchmark on ViT-B/16 and ViT-B/32 in bf16 (training per method vs a raw open_clip loop,
# evaluation vs raw encoding, JPEG pipeline), and a short runner run in bf16 and fp16.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=.cache/gpu_wheels
OUT=${OUT:-outputs/gpu}

if [[ "${1:-}" == "--prepare" ]]; then
    mkdir -p "$WHEELS"
    # pure-Python wheels only (antlr4 4.9.3 is an sdist: pip wheel builds it into one)
    .venv/bin/python -m pip wheel --quiet --no-deps -w "$WHEELS" \
        open_clip_torch ftfy wcwidth "hydra-core>=1.3.2,<1.4" "omegaconf>=2.3,<2.4" antlr4-python3-runtime==4.9.3 pytest iniconfig pluggy
    ls "$WHEELS"
    exit 0
fi

mkdir -p "$OUT"
python -m pip install --quiet --no-index --find-links "$WHEELS" --no-deps "$WHEELS"/*.whl 2>&1 | tail -3
export PYTHONPATH=$PWD WANDB_MODE=disabled HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"

echo "== CUDA tests (AMP paths)"
python -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_teacher_precision.py 2>&1 | tail -5 | tee "$OUT/cuda_tests.txt"

echo "== benchmark"
timeout 420 python scripts/bench.py --device cuda --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt"

echo "== the runner end to end in bf16 and fp16 (random-init tiny CLIP, the synthetic stages, 20 steps each)"
for precision in bf16 fp16; do
    timeout 120 python -m clipcl_runner.cli model=open_clip model.name=SynthCLIP-RN-Tiny model.pretrained=null method=lwf \
        logger=none trainer.precision=$precision trainer.progress=false tasks.iterations=20 tasks.epochs=null \
        eval.probes.synthetic.heldout_images=200 hydra.run.dir="$OUT/run_$precision" 2>&1 | tail -2
done
echo "results in $OUT"
