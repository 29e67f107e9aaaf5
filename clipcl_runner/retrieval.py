"""Image<->text retrieval recall (docs/protocols.md, "Metrics of the paper").

* image->text R@K: share of images for which ANY of their captions is among the top K
  captions (ranked over all captions by similarity);
* text->image R@K: share of captions whose image is among the top K images.

Scores are dot products of the given features (pass L2-normalised features to get cosine
similarity; nothing is renormalised here). Ranks use a comparison count. Ties (``ties``):
``official`` ranks candidates as ``np.argsort(scores)[::-1]`` of a stable sort does, as
CL-CLIP's i2t/t2i do: among equal scores the candidate with the LARGER index comes first, so
the rank of a positive is the number of candidates with a greater score plus the tied ones
with a larger index (numpy's default argsort is only stable up to 16 candidates, beyond that
the official order of exact ties is implementation-defined); ``optimistic`` counts only
strictly greater scores (ties resolved in favour of the positive). A hit at K means rank < K.
Similarities are computed in chunks of ``chunk_size`` queries, so memory is
O(chunk_size x N), never N_img x N_txt.

Images without any caption are EXCLUDED from image->text (they have nothing to retrieve);
they remain candidates (distractors) for text->image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config_schema import RetrievalTies

__all__ = ["recall_at_k", "folded_recall"]

TIES = RetrievalTies.values()


def _check(image_features, text_features, text_to_image):
    if image_features.ndim != 2 or text_features.ndim != 2:
        raise ValueError("features must be 2-D (N, D)")
    if image_features.shape[1] != text_features.shape[1]:
        raise ValueError(f"feature sizes differ: images {image_features.shape[1]}, texts {text_features.shape[1]}")
    n_img, n_txt = image_features.shape[0], text_features.shape[0]
    if n_img == 0 or n_txt == 0:
        raise ValueError(f"need at least one image and one caption, got {n_img} and {n_txt}")
    t2i = torch.as_tensor(text_to_image)
    if t2i.shape != (n_txt,) or t2i.dtype.is_floating_point or t2i.dtype == torch.bool:
        raise ValueError(f"text_to_image must be an integer tensor of shape ({n_txt},)")
    if int(t2i.min()) < 0 or int(t2i.max()) >= n_img:
        raise ValueError(f"text_to_image values must lie in [0, {n_img})")
    return t2i.to(device=image_features.device, dtype=torch.long)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@torch.no_grad()
def recall_at_k(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    ties: str = "official",
) -> dict[str, float]:
    """Recall@K in percent, keys ``i2t_r{k}`` and ``t2i_r{k}`` for every k in ``ks``.

    ``image_features`` (N_img, D), ``text_features`` (N_txt, D), ``text_to_image`` (N_txt,)
    the image index of each caption (any number of captions per image). See the module
    docstring for the definitions, tie handling (``ties``) and images without captions.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    if ties not in TIES:
        raise ValueError(f"ties='{ties}' is not one of {TIES}")
    official = ties == "official"
    t2i = _check(image_features, text_features, text_to_image)
    img = _as_float(image_features)
    txt = _as_float(text_features).to(img.device)
    n_img, n_txt = img.shape[0], txt.shape[0]

    # text -> image: per caption, rank of its own image among all images.
    t2i_rank = torch.empty(n_txt, dtype=torch.long, device=img.device)
    for s in range(0, n_txt, chunk_size):
        sims = txt[s : s + chunk_size] @ img.T  # (c, N_img)
        own = t2i[s : s + chunk_size, None]  # (c, 1)
        pos = sims.gather(1, own)
        ahead = sims > pos
        if official:  # tied images with a larger index come first
            ahead |= (sims == pos) & (torch.arange(n_img, device=img.device)[None, :] > own)
        t2i_rank[s : s + chunk_size] = ahead.sum(1)

    # image -> text: per image, rank of its best caption among all captions.
    i2t_rank = torch.empty(n_img, dtype=torch.long, device=img.device)
    has_caption = torch.zeros(n_img, dtype=torch.bool, device=img.device)
    has_caption[t2i] = True
    for s in range(0, n_img, chunk_size):
        sims = img[s : s + chunk_size] @ txt.T  # (c, N_txt)
        idx = torch.arange(s, s + sims.shape[0], device=img.device)
        mine = t2i[None, :] == idx[:, None]  # (c, N_txt)
        pos = sims.masked_fill(~mine, float("-inf")).amax(1, keepdim=True)
        ahead = sims > pos
        if official:  # the first positive in (score, index) descending order; ties after it
            column = torch.arange(n_txt, device=img.device)[None, :]
            best = torch.where(mine & (sims == pos), column, -1).amax(1, keepdim=True)
            ahead |= (sims == pos) & (column > best)
        i2t_rank[s : s + chunk_size] = ahead.sum(1)
    i2t_rank = i2t_rank[has_caption]

    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_r{k}"] = 100.0 * (i2t_rank < k).double().mean().item()
    for k in ks:
        out[f"t2i_r{k}"] = 100.0 * (t2i_rank < k).double().mean().item()
    return out


@torch.no_grad()
def folded_recall(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    folds: int = 5,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    ties: str = "official",
) -> dict[str, float]:
    """Mean over folds of :func:`recall_at_k` (COCO 5k as 5 folds of 1k images).

    Images are split into ``folds`` contiguous folds of equal size (``N_img`` must be
    divisible by ``folds``, else ``ValueError``); each fold is evaluated with only the
    captions of its own images. Same keys as :func:`recall_at_k`.
    """
    if folds < 1:
        raise ValueError("folds must be >= 1")
    t2i = _check(image_features, text_features, text_to_image)
    n_img = image_features.shape[0]
    if n_img % folds:
        raise ValueError(f"{n_img} images cannot be split into {folds} equal folds")
    size = n_img // folds
    total: dict[str, float] = {}
    for f in range(folds):
        lo, hi = f * size, (f + 1) * size
        sel = (t2i >= lo) & (t2i < hi)
        if not bool(sel.any()):
            raise ValueError(f"fold {f} (images {lo}..{hi - 1}) has no captions")
        r = recall_at_k(
            image_features[lo:hi],
            text_features[sel.to(text_features.device)],
            t2i[sel] - lo,
            ks=ks,
            chunk_size=chunk_size,
            ties=ties,
        )
        for key, v in r.items():
            total[key] = total.get(key, 0.0) + v / folds
    return total
