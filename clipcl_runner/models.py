"""Loading CLIP models through open_clip, and choosing which of their parameters train.

Everything goes through open_clip's public API (``create_model``, ``get_tokenizer``,
``image_transform``); we never edit or copy its source, we only wrap its models.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from torch import nn

from .config_schema import Part

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
PARTS = Part.values()


def register_model_configs() -> None:
    """Make our own architecture configs (e.g. the tiny synthetic CLIP) known to open_clip."""
    if "SynthCLIP-RN-Tiny" not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIG_DIR)


@dataclass
class ClipBundle:
    """An open_clip model with what is needed to feed it."""

    model: nn.Module
    tokenizer: Callable
    name: str
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    preprocess_train: Callable
    preprocess_eval: Callable

    @property
    def context_length(self) -> int:
        return int(self.tokenizer.context_length)


class PretrainedWeightsMissing(RuntimeError):
    """Raised when a pretrained tag is requested whose weights are neither cached nor downloadable."""


def _weights_hint(model_name: str, pretrained: str, cache_dir: str | None) -> str:
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained) or {}
    hub = cfg.get("hf_hub", "").rstrip("/")
    url = cfg.get("url", "")
    where = cache_dir or os.environ.get("HF_HUB_CACHE") or "~/.cache/huggingface/hub"
    lines = [
        f"Pretrained weights '{pretrained}' for open_clip model '{model_name}' are not cached and could not be fetched.",
        "Fix it in one of these ways:",
    ]
    if hub:
        lines.append(
            f"  - on a machine with internet: `huggingface-cli download {hub} open_clip_pytorch_model.bin"
            f" --cache-dir {where}` (or run this job once there), then copy the cache folder here;"
        )
    if url:
        lines.append(f"  - download {url} and pass its path: model.pretrained=/path/to/{Path(url).name};")
    lines.append("  - or pass any local open_clip checkpoint file: model.pretrained=/path/to/checkpoint.pt")
    return "\n".join(lines)


def _tag_is_cached(model_name: str, pretrained: str, cache_dir: str | None) -> bool:
    located = _hub_file(model_name, pretrained)
    if located is None:
        return False
    from huggingface_hub import try_to_load_from_cache

    repo_id, filename = located
    for candidate in [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]:
        found = try_to_load_from_cache(repo_id, candidate, cache_dir=cache_dir)
        if isinstance(found, str):
            return True
    return False


def _hub_file(model_name: str, pretrained: str) -> tuple[str, str] | None:
    """(repo id, file name) of a tag's weights on the Hugging Face hub, the name empty where the tag
    names a repository ("timm/vit_base_patch32_clip_224.openai/"); None for a tag served by URL."""
    hub = (open_clip.get_pretrained_cfg(model_name, pretrained) or {}).get("hf_hub", "")
    return os.path.split(hub) if hub else None


def _hub_reachable(model_name: str, pretrained: str, timeout_s: float = 5.0) -> bool:
    """One metadata request with a short timeout. Without it an offline machine would sit in the
    hub's own retry loop (about a minute per file) before open_clip reports a download error."""
    located = _hub_file(model_name, pretrained)
    if located is None:
        return True  # a URL download: open_clip fails fast on its own
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    repo_id, filename = located
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename or "open_clip_pytorch_model.bin"), timeout=timeout_s)
    except Exception:  # noqa: BLE001 - no network, DNS, proxy, 4xx/5xx: all mean "cannot fetch now"
        return False
    return True


@contextmanager
def hub_offline(enabled: bool) -> Iterator[None]:
    """Hugging Face hub offline mode for one call. The hub reads ``HF_HUB_OFFLINE`` once, when it is
    imported, so the environment variable cannot switch it later: its module flag is switched instead."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = previous or enabled
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def tag_quick_gelu(name: str, pretrained: str | None) -> bool | None:
    """Whether a pretrained tag's weights were trained with QuickGELU (None: no tag, e.g. a file).

    OpenAI's CLIP weights were (open_clip's pretrained config says ``quick_gelu: True`` for them).
    """
    if not pretrained or os.path.isfile(pretrained):
        return None
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    return bool(cfg.get("quick_gelu", False)) if cfg else None


def built_activation(model: nn.Module) -> str | None:
    """The MLP activation the built transformers use: 'quick_gelu', 'gelu', or None (none found)."""
    kinds = set()
    for module in model.modules():
        if type(module).__name__ == "QuickGELU":
            kinds.add("quick_gelu")
        elif isinstance(module, nn.GELU):
            kinds.add("gelu")
    if len(kinds) > 1:
        raise ValueError(f"the model mixes activations {sorted(kinds)}; expected one kind.")
    return kinds.pop() if kinds else None


def _check_activation(model: nn.Module, name: str, pretrained: str | None, wanted: bool | None) -> None:
    """A network whose activation differs from what its weights were trained with is refused."""
    built = built_activation(model)
    if built is None or wanted is None:
        return
    if (built == "quick_gelu") != wanted:
        raise ValueError(
            f"open_clip built {name} with {built} but model.pretrained='{pretrained}' needs "
            f"{'quick_gelu' if wanted else 'gelu'}: set model.quick_gelu={str(wanted).lower()} "
            f"(or use the '{name}-quickgelu' model name)."
        )


def load_open_clip(
    name: str,
    pretrained: str | None = None,
    cache_dir: str | None = None,
    allow_download: bool = True,
    device: str | torch.device = "cpu",
    quick_gelu: bool | None = None,
    load_weights: bool = True,
) -> ClipBundle:
    """Build an open_clip model, loading ``pretrained`` (a tag such as ``openai`` or a file path).

    A tag whose weights are not cached fails with a message naming the file to fetch and where
    to put it, instead of open_clip's network error deep inside hub code.

    ``quick_gelu``: None takes the activation the tag's weights were trained with (QuickGELU for
    OpenAI's; open_clip 3.x itself would build nn.GELU for ``ViT-B-32`` + ``openai`` and only
    warn); true/false force it. A built activation that differs from the tag's is an error.
    ``load_weights=False`` builds the same network with random weights and fetches nothing.
    """
    register_model_configs()
    if name not in open_clip.list_models():
        raise ValueError(
            f"Unknown open_clip model '{name}'. Choose one of open_clip.list_models(), e.g. ViT-B-32, ViT-B-16, RN50."
        )
    if pretrained and not os.path.isfile(pretrained):
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise FileNotFoundError(
                f"model.pretrained='{pretrained}' is neither a file nor a pretrained tag of {name} "
                f"(tags: {tags}). Pass an existing checkpoint path or one of the tags."
            )
    trained_with = tag_quick_gelu(name, pretrained)
    if quick_gelu is not None and trained_with is not None and bool(quick_gelu) != trained_with:
        raise ValueError(
            f"model.quick_gelu={str(quick_gelu).lower()} but the '{pretrained}' weights of {name} were trained "
            f"with quick_gelu={str(trained_with).lower()}: leave model.quick_gelu=null."
        )
    wanted = trained_with if quick_gelu is None else bool(quick_gelu)
    # Offline unless the user chose: cached weights load without a network call; absent weights are
    # looked up once (a few seconds), not through the hub's minute of retries on an offline machine.
    user_offline = os.environ.get("HF_HUB_OFFLINE")
    cached = False
    if pretrained and not os.path.isfile(pretrained) and load_weights:
        cached = _tag_is_cached(name, pretrained, cache_dir)
        offline = (user_offline or "0").lower() not in ("0", "", "false") or not allow_download
        if not cached and (offline or (user_offline is None and not _hub_reachable(name, pretrained))):
            raise PretrainedWeightsMissing(_weights_hint(name, pretrained, cache_dir))
    try:
        with hub_offline(cached and user_offline is None):
            model, preprocess_train, preprocess_eval = open_clip.create_model_and_transforms(
                name,
                pretrained=pretrained if load_weights else None,
                cache_dir=cache_dir,
                device=device,
                force_quick_gelu=bool(wanted),
            )
    except (RuntimeError, FileNotFoundError) as error:  # open_clip's download errors
        if pretrained and not os.path.isfile(pretrained):
            raise PretrainedWeightsMissing(_weights_hint(name, pretrained, cache_dir)) from error
        raise
    _check_activation(model, name, pretrained, wanted)
    visual = model.visual
    return ClipBundle(
        model=model,
        tokenizer=open_clip.get_tokenizer(name),
        name=name,
        image_mean=tuple(getattr(visual, "image_mean", open_clip.OPENAI_DATASET_MEAN)),
        image_std=tuple(getattr(visual, "image_std", open_clip.OPENAI_DATASET_STD)),
        preprocess_train=preprocess_train,
        preprocess_eval=preprocess_eval,
    )


def tower_of(parameter_name: str) -> str:
    """Which part of an open_clip CLIP a parameter belongs to: 'image', 'text' or 'logit'."""
    if parameter_name.startswith("visual."):
        return "image"
    if parameter_name.startswith("logit_"):
        return "logit"
    return "text"


def select_trainable(model: nn.Module, part: str, train_logit_scale: bool) -> list[nn.Parameter]:
    """Freeze everything except ``part`` (whole | image | text, as the paper defines it)."""
    if part not in PARTS:
        raise ValueError(f"part='{part}' is not one of {PARTS}.")
    trainable = []
    for name, param in model.named_parameters():
        tower = tower_of(name)
        wanted = (tower == "logit" and train_logit_scale) or (tower != "logit" and part in ("whole", tower))
        param.requires_grad_(wanted)
        if wanted:
            trainable.append(param)
    return trainable


def clamp_logit_scale(model: nn.Module, max_scale: float = 100.0) -> None:
    """Keep exp(logit_scale) <= max_scale, as CLIP's training does."""
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(max_scale))
