#!/usr/bin/env bash
# The one-shot GPU check: every CUDA measurement in one run of at most 9 minutes, for a session
# that is lent the GPU machine (one H200, Python 3.12, torch + torchvision + timm + transformers
# preinstalled, nothing else, no internet). docs/performance.md ("GPU") says how to run it.
#
#   bash scripts/gpu_check.sh --prepare     # here: the wheels the GPU image lacks -> .cache/gpu_wheels
#   bash scripts/gpu_check.sh               # there (device tool: carry [".cache/gpu_wheels"], timeout_s 570)
#   bash scripts/gpu_check.sh --cpu-smoke   # here / CI: the same script's CPU-runnable parts
#
# The wheels are installed into their own folder ($GPU_SITE, on PYTHONPATH), never into the image's
# site-packages. Results go to $OUT (the device tool's folder; default outputs/gpu): one log per
# section, bench_*.json, the runs' folders, and verdict.md -- the table printed at the end.
# The exit status is 0 only when every section passed.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WHEELS=${GPU_WHEELS:-.cache/gpu_wheels}
SITE=${GPU_SITE:-.cache/gpu_site}
OUT=${OUT:-outputs/gpu}
PYTHON=${PYTHON:-python}
BUDGET_S=${GPU_CHECK_BUDGET_S:-530}  # the device tool gives a command 600 s; keep the table inside 9 minutes
CARRY_LIMIT_MB=64                      # the device tool carries at most 64 MiB of ignored files

# What the runner's CUDA path, its CUDA tests and the bench import beyond the GPU image (torch,
# torchvision, timm, transformers and their dependencies: numpy, pillow, tqdm, regex, PyYAML,
# huggingface_hub, safetensors, packaging). Not here on purpose: pandas (the report), matplotlib
# (figures: the runner logs a warning without one), wandb (logger=wandb only), scipy (.mat datasets),
# submitit (SLURM launchers). tests/test_gpu_image.py proves the list complete.
RUNTIME=(open_clip_torch ftfy wcwidth hydra-core omegaconf antlr4-python3-runtime)
TESTING=(pytest iniconfig pluggy pygments)

# pip's messages without this machine's local-index notices; keeps pip's exit status
pip_quiet() {
    "$@" 2>&1 | grep -v "is ignored: it is neither a file nor a directory"
    return "${PIPESTATUS[0]}"
}

prepare() {
    # Versions: the ones this checkout's .venv runs (the tested set). Binary wheels only, for the
    # GPU image's CPython (GPU_PYTHON_VERSION, 3.12) on manylinux x86_64; antlr4 4.9.3 exists only
    # as an sdist, so pip builds its (pure-Python) wheel.
    local pyver=${GPU_PYTHON_VERSION:-3.12} prep=${PREP_PYTHON:-.venv/bin/python} name version
    rm -rf "$WHEELS" && mkdir -p "$WHEELS"
    for name in "${RUNTIME[@]}" "${TESTING[@]}"; do
        version=$("$prep" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") || {
            echo "prepare: $name is not installed in $prep (make install first)" >&2; return 1; }
        if [[ $name == antlr4-python3-runtime ]]; then
            pip_quiet "$prep" -m pip wheel --quiet --no-deps -w "$WHEELS" "$name==$version" || return 1
        else
            pip_quiet "$prep" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$pyver" \
                --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d "$WHEELS" "$name==$version" || return 1
        fi
    done
    ls -l "$WHEELS" | awk 'NR > 1 {print "  " $NF}'
    local size_kb
    size_kb=$(du -sk "$WHEELS" | cut -f1)
    echo "prepared $(ls "$WHEELS" | wc -l) wheels for CPython $pyver in $WHEELS: $((size_kb / 1024)) MiB (carry limit $CARRY_LIMIT_MB MiB)"
    if (( size_kb > CARRY_LIMIT_MB * 1024 )); then
        echo "prepare: $WHEELS is over the device tool's carry limit" >&2
        return 1
    fi
}

if [[ "${1:-}" == "--prepare" ]]; then
    prepare
    exit $?
fi
MODE=${1:-gpu}
case $MODE in gpu | --cpu-smoke) ;; *) echo "usage: $0 [--prepare | --cpu-smoke]" >&2; exit 2 ;; esac

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STARTED=$SECONDS
NAMES=() VERDICTS=() TIMES=()

# section NAME TIMEOUT_S CMD...: run CMD with a timeout cut to the budget left, log to $OUT/NAME.log
section() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET_S - (SECONDS - STARTED)))
    (( limit > left )) && limit=$left
    echo "== $name (limit ${limit}s)"
    if (( limit < 10 )); then
        NAMES+=("$name") VERDICTS+=("SKIPPED: out of time") TIMES+=(0)
        return
    fi
    local begin=$SECONDS rc
    # bash -c: a section may be one of this script's functions (exported below)
    timeout --kill-after=10 "$limit" bash -c '"$@"' _ "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    tail -n 4 "$OUT/$name.log"
    local verdict="ok"
    if (( rc == 124 || rc == 137 )); then
        verdict="TIMEOUT after ${limit}s"
    elif (( rc != 0 )); then
        verdict="FAILED (exit $rc): $(grep -E 'Error|error:|FAILED|No module' "$OUT/$name.log" | tail -n 1 | cut -c1-110)"
        [[ $verdict == *": " ]] && verdict+="see the log"
    elif [[ $name == cuda_tests ]] && grep -q "skipped" "$OUT/$name.log" && ! grep -q "passed" "$OUT/$name.log"; then
        verdict="ok (all skipped: no GPU)"
    elif [[ $name == bench* ]] && grep -q "MISSED" "$OUT/$name.log"; then
        verdict="ok, $(grep -c "MISSED" "$OUT/$name.log") rows MISSED their target (a measurement: see the log)"
    fi
    NAMES+=("$name") VERDICTS+=("$verdict") TIMES+=($((SECONDS - begin)))
}

install_wheels() {
    # Exactly what the GPU machine runs: the carried wheels, no index, no dependencies resolved
    # (the image provides the rest), into their own folder.
    ls "$WHEELS"/*.whl > /dev/null 2>&1 || { echo "no wheels in $WHEELS: run --prepare here first" >&2; return 1; }
    rm -rf "$SITE" && mkdir -p "$SITE"
    if "$PYTHON" -m pip --version > /dev/null 2>&1; then
        "$PYTHON" -m pip install --quiet --no-index --no-deps --disable-pip-version-check --target "$SITE" "$WHEELS"/*.whl
    else  # no pip in the image: a wheel is a zip of its installed layout (none of these has scripts or data)
        local wheel
        for wheel in "$WHEELS"/*.whl; do "$PYTHON" -m zipfile -e "$wheel" "$SITE" || return 1; done
    fi
    ls "$SITE"
}

check_imports() {
    # Every module of the package the GPU run may touch (the report reads run folders later, elsewhere).
    "$PYTHON" - <<'EOF'
import importlib, pkgutil, sys
import clipcl_runner
off_path = {"clipcl_runner.report"}  # needs pandas: run it where the results are read
failed = []
for info in pkgutil.walk_packages(clipcl_runner.__path__, "clipcl_runner."):
    if info.name not in off_path:
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            failed.append(f"{info.name}: {type(exc).__name__}: {exc}")
try:
    import torch, torchvision, open_clip, hydra
    print(f"python {sys.version.split()[0]} | torch {torch.__version__} | torchvision {torchvision.__version__} | "
          f"open_clip {open_clip.__version__} | hydra {hydra.__version__} | cuda {torch.cuda.is_available()}")
except Exception as exc:
    failed.append(f"versions: {type(exc).__name__}: {exc}")
heavy = sorted(m for m in ("pandas", "matplotlib", "scipy") if m in sys.modules)
if heavy:
    failed.append(f"the runner's modules imported {heavy}")
print("\n".join(failed) or "every runner module imports")
sys.exit(1 if failed else 0)
EOF
}

# The runner end to end: random-init ViT-B-32 on synthetic 224 px stages (LwF: a teacher, so the
# teacher's precision is exercised). bf16 runs the defaults; fp16 runs CL-CLIP's setting (grad scaler,
# clipping before unscaling, fp32 teachers and evaluation, no logit-scale clamp).
# runner DEVICE PRECISION STAGES STEPS IMAGES_PER_CLASS PROBE_IMAGES
runner() {
    local device=$1 precision=$2 stages=$3 steps=$4 per_class=$5 probes=$6
    local options=()
    if [[ $precision == fp16 ]]; then
        options=(trainer.grad_clip_norm=1.0 trainer.grad_clip_before_unscale=true trainer.teacher_precision=fp32
                 eval.precision=fp32 trainer.clamp_logit_scale=false)
    fi
    local run_dir=$OUT/run_${device}_$precision
    "$PYTHON" -m clipcl_runner.cli model=open_clip model.name=ViT-B-32 model.pretrained=null method=lwf logger=none \
        trainer.device="$device" trainer.precision="$precision" trainer.progress=false trainer.batch_size=32 \
        trainer.num_workers=0 tasks.num_stages="$stages" tasks.epochs=null tasks.iterations="$steps" \
        tasks.train_per_class="$per_class" tasks.test_per_class="$per_class" eval.batch_size=128 \
        eval.probes.synthetic.heldout_images="$probes" eval.probes.synthetic.seen_images="$probes" \
        eval.probes.synthetic.novel_images="$probes" eval.probes.synthetic.retrieval_images="$probes" \
        "${options[@]}" paths.output_dir="$OUT" hydra.run.dir="$run_dir" || return 1
    test -s "$run_dir/summary.json" || { echo "no summary.json in $run_dir" >&2; return 1; }
    echo "summary: $(cat "$run_dir/summary.json" | tr -d '\n' | cut -c1-300)"
}

# Two processes, NCCL, both on GPU 0: NCCL usually refuses two ranks on one device ("Duplicate GPU
# detected"); the runner itself puts rank r on cuda:r, so its DDP needs one GPU per process.
nccl_one_gpu() {
    "$PYTHON" - <<'EOF'
import os, torch, torch.distributed as dist, torch.multiprocessing as mp

def work(rank):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    dist.init_process_group("nccl", rank=rank, world_size=2, device_id=torch.device("cuda", 0))
    value = torch.full((4,), float(rank + 1), device="cuda:0")
    dist.all_reduce(value)
    assert value.tolist() == [3.0] * 4, value
    dist.destroy_process_group()

mp.spawn(work, nprocs=2)
print("two NCCL ranks on one GPU: all_reduce ok")
EOF
}

[[ $SITE == /* ]] || SITE=$REPO/$SITE
export PYTHONPATH=$REPO:$SITE WANDB_MODE=disabled HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export WHEELS SITE OUT PYTHON
export -f install_wheels check_imports runner nccl_one_gpu

section install_wheels 60 install_wheels
section imports 60 check_imports
if [[ $MODE == --cpu-smoke ]]; then
    # What CI can run without a GPU: the same installs and imports, the CUDA tests (they skip), the
    # bench's train section on the tiny model, and the runner on the CPU (fp32) with the fp16 command's options.
    section cuda_tests 120 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_teacher_precision.py
    section bench_cpu_train 240 "$PYTHON" scripts/bench.py --device cpu --sections train --methods finetune,lwf \
        --steps 2 --warmup 1 --json "$OUT/bench_cpu.json"
    section runner_cpu 300 runner cpu fp16 1 1 2 6
else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
    section cuda_tests 90 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_teacher_precision.py
    section runner_bf16 75 runner cuda bf16 2 30 64 200
    section runner_fp16 75 runner cuda fp16 2 30 64 200
    section bench_vit_b32 120 "$PYTHON" scripts/bench.py --device cuda --models ViT-B-32 --json "$OUT/bench_vit_b32.json"
    section bench_vit_b16 150 "$PYTHON" scripts/bench.py --device cuda --models ViT-B-16 --json "$OUT/bench_vit_b16.json"
    section ddp_nccl_one_gpu 30 nccl_one_gpu
fi

{
    echo "| section | verdict | seconds | log |"
    echo "|---|---|---|---|"
    for i in "${!NAMES[@]}"; do
        echo "| ${NAMES[$i]} | ${VERDICTS[$i]} | ${TIMES[$i]} | ${NAMES[$i]}.log |"
    done
    echo
    echo "total $((SECONDS - STARTED)) s of a $BUDGET_S s budget; results in $OUT"
} | tee "$OUT/verdict.md"
for verdict in "${VERDICTS[@]}"; do
    [[ $verdict == ok* ]] || exit 1
done
exit 0
