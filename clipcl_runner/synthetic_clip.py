"""The tiny CLIP of the offline default: pretrained on the synthetic world, cached, loaded by open_clip.

The checkpoint lives in ``<cache_dir>/<key>/`` where the key hashes the pretraining config and
the architecture, so changing either pretrains anew and never reuses a stale file. Loading
goes through open_clip's normal ``pretrained=<file>`` path.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import time
from pathlib import Path

import open_clip
import torch
from open_clip.loss import ClipLoss
from tqdm.auto import tqdm

from .data.stages import normalise_uint8
from .data.synthetic import pretraining_set
from .models import MODEL_CONFIG_DIR, ClipBundle, clamp_logit_scale, load_open_clip, register_model_configs
from .run_folder import atomic_write
from .text_encoding import encode_text, used_length
from .trainer import cosine_with_warmup

log = logging.getLogger(__name__)
MODEL_NAME = "SynthCLIP-RN-Tiny"
CHECKPOINT_NAME = f"{MODEL_NAME}.pt"
RECIPE = 2  # 2: fused AdamW, captions encoded up to their last EOT


def cache_key(pretrain: dict) -> str:
    architecture = json.loads((MODEL_CONFIG_DIR / f"{MODEL_NAME}.json").read_text())
    # ``recipe`` changes whenever the pretraining code does, so a cache never holds another recipe's model.
    blob = json.dumps({"pretrain": pretrain, "architecture": architecture, "recipe": RECIPE}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only, as open_clip's training does (no decay on gains, biases, norms, logit scale)."""
    no_decay = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in params if no_decay(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in params if not no_decay(n, p)], "weight_decay": weight_decay},
    ]


def pretrain(
    output: Path,
    num_images: int = 20000,
    captions_per_image: int = 3,
    epochs: int = 6,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    warmup_fraction: float = 0.05,
    world_seed: int = 0,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Contrastive pretraining of the tiny CLIP on seen (shape, colour) pairs; writes an open_clip checkpoint."""
    register_model_configs()
    torch.manual_seed(seed)
    started = time.perf_counter()
    model = open_clip.create_model(MODEL_NAME)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    data = pretraining_set(num_images, captions_per_image, world_seed)
    images = normalise_uint8(data.images, model.visual.image_mean, model.visual.image_std)
    tokens = tokenizer([text for texts in data.captions for text in texts]).view(num_images, captions_per_image, -1)
    log.info("synthetic pretraining data: %d images made in %.1fs", num_images, time.perf_counter() - started)

    text_length = used_length(tokens.view(-1, tokens.shape[-1]))
    optimizer = torch.optim.AdamW(
        weight_decay_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True
    )
    steps_per_epoch = math.ceil(num_images / batch_size)
    total = steps_per_epoch * epochs
    schedule = cosine_with_warmup(optimizer, total, warmup_steps=max(1, int(warmup_fraction * total)))
    loss_fn = ClipLoss()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(total=total, desc="pretraining synthetic CLIP", disable=not progress, unit="step")
    for _ in range(epochs):
        order = torch.randperm(num_images, generator=generator)
        caption_choice = torch.randint(0, captions_per_image, (num_images,), generator=generator)
        for start in range(0, num_images, batch_size):
            index = order[start : start + batch_size]
            image_features = model.encode_image(images[index], normalize=True)
            text_features = encode_text(model, tokens[index, caption_choice[index]], length=text_length)
            loss = loss_fn(image_features, text_features, model.logit_scale.exp())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            clamp_logit_scale(model)
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    state = model.state_dict()  # tensors only: open_clip loads it with weights_only=True
    atomic_write(output, lambda handle: torch.save(state, handle))  # a kill or full disk leaves no partial file
    log.info("synthetic CLIP pretrained in %.0fs -> %s", time.perf_counter() - started, output)
    return output


@contextlib.contextmanager
def _locked(path: Path):
    """Serialise pretraining across parallel sweep jobs that share one cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_checkpoint(pretrain_cfg: dict, cache_dir: str | Path, progress: bool = True) -> Path:
    checkpoint = Path(cache_dir) / cache_key(pretrain_cfg) / CHECKPOINT_NAME
    with _locked(checkpoint.parent / ".lock"):
        if not checkpoint.is_file():
            log.warning(
                "No cached synthetic CLIP for this pretraining config at %s: pretraining it now "
                "(%d images x %d epochs; cached for every later run).",
                checkpoint,
                pretrain_cfg.get("num_images", 0),
                pretrain_cfg.get("epochs", 0),
            )
            pretrain(checkpoint, progress=progress, **pretrain_cfg)
            atomic_write(checkpoint.parent / "pretrain.json", json.dumps(pretrain_cfg, indent=2, sort_keys=True))
    return checkpoint


def load_synthetic_clip(pretrain: dict, cache_dir: str, device: str | torch.device = "cpu") -> ClipBundle:
    """The pretrained tiny CLIP, pretraining it first when the cache has none for this config."""
    checkpoint = ensure_checkpoint(dict(pretrain), cache_dir)
    return load_open_clip(MODEL_NAME, pretrained=str(checkpoint), device=device)
