"""Training-step throughput per method and precision, as ratios against plain fine-tuning in the same run.

    python scripts/bench_train_step.py                         # tiny synthetic CLIP, CPU or CUDA
    python scripts/bench_train_step.py --model ViT-B-32 --image-size 224 --batch 256   # on a GPU
    python scripts/bench_train_step.py --precisions fp32 bf16  # AMP vs fp32 (CUDA)

Models are random-init (no weights needed). Each configuration runs warm-up steps, then is
timed over --steps steps; the baseline (finetune at the first precision) is measured in the
same process, so the ratios are comparable across machines.
"""
from __future__ import annotations

import argparse
import time

import open_clip
import torch

from clipcl_runner.data.stages import Stage, TensorImages
from clipcl_runner.methods.base import RunContext
from clipcl_runner.methods.finetune import Finetune
from clipcl_runner.methods.lwf import LwF
from clipcl_runner.methods.vr_lwf import VRLwF
from clipcl_runner.models import register_model_configs
from clipcl_runner.precision import resolve_device
from clipcl_runner.trainer import StageTraining, TrainSettings

METHODS = {
    "finetune": lambda: Finetune("finetune"),
    "lwf": lambda: LwF("lwf"),
    "vr_lwf": lambda: VRLwF("vr_lwf", num_texts=100),
}


def measure(model_name, image_size, batch, steps, warmup, method_name, precision, part, device, classes):
    torch.manual_seed(0)
    model = open_clip.create_model(model_name, device=device)
    images = torch.randn(batch * (steps + warmup), 3, image_size, image_size)
    labels = torch.randint(0, classes, (len(images),))
    data = TensorImages(images, labels)
    stage = Stage("bench", [f"class {i}" for i in range(classes)], data, data, iterations=steps + warmup)
    run = RunContext(model=model, tokenizer=open_clip.get_tokenizer(model_name), device=device, stages=[stage], part=part)
    method = METHODS[method_name]()
    parameters = method.setup(run)
    method.begin_stage(run)
    training = StageTraining(
        run, method, parameters, lambda params, **kw: torch.optim.AdamW(params, lr=1e-5, **kw), None,
        TrainSettings(batch_size=batch, precision=precision, progress=False), seed=0,
    )
    batches = training.batches()
    for _ in range(warmup):
        training.train_step(*next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        training.train_step(*next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return steps * batch / seconds, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="SynthCLIP-RN-Tiny")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--part", default="whole")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--precisions", nargs="+", default=None, help="default: fp32 on CPU, fp32 and bf16 on CUDA")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    register_model_configs()
    device = resolve_device(args.device)
    precisions = args.precisions or (["fp32", "bf16"] if device.type == "cuda" else ["fp32"])
    print(f"# {args.model} {args.image_size}px, batch {args.batch}, part={args.part}, {device}, "
          f"{torch.get_num_threads()} CPU threads, {args.steps} timed steps")
    print(f"{'method':10} {'precision':9} {'img/s':>9} {'vs baseline':>12} {'peak GiB':>9}")
    baseline = None
    for precision in precisions:
        for method in args.methods:
            rate, memory = measure(args.model, args.image_size, args.batch, args.steps, args.warmup, method,
                                   precision, args.part, device, args.classes)
            baseline = baseline or rate
            print(f"{method:10} {precision:9} {rate:9.1f} {rate / baseline:11.2f}x {memory:9.2f}")


if __name__ == "__main__":
    main()
