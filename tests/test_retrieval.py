"""Checks of clipcl_runner.retrieval on hand-built similarity tables."""

import pytest
import torch

from clipcl_runner.retrieval import folded_recall, recall_at_k

# With one-hot image features, caption j's score for image m is just TXT[j][m]
# (recall_at_k ranks by dot product; it does not renormalise).
IMG3 = torch.eye(3)
TXT3 = torch.tensor(
    [
        [0.9, 0.1, 0.5],  # caption 0 of image 0: own .9, above it: none         -> t2i rank 0
        [0.2, 0.5, 0.1],  # caption 1 of image 0: own .2, above it: .5           -> rank 1
        [0.3, 0.6, 0.1],  # caption 2 of image 1: own .6, above it: none         -> rank 0
        [0.7, 0.4, 0.6],  # caption 3 of image 1: own .4, above it: .7, .6       -> rank 2
        [0.6, 0.2, 0.3],  # caption 4 of image 2: own .3, above it: .6           -> rank 1
        [0.1, 0.7, 0.2],  # caption 5 of image 2: own .2, above it: .7           -> rank 1
    ]
)
T2I3 = torch.tensor([0, 0, 1, 1, 2, 2])
# image->text, columns of TXT3:
#   image 0: .9 .2 | .3 .7 .6 .1 -> best own .9, above it none       -> rank 0
#   image 1: .1 .5 | .6 .4 | .2 .7 -> best own .6, above it .7       -> rank 1
#   image 2: .5 .1 .1 .6 | .3 .2 -> best own .3, above it .5, .6     -> rank 2


def approx(x):
    return pytest.approx(x, abs=1e-6)


def test_hand_built_three_images_two_captions():
    r = recall_at_k(IMG3, TXT3, T2I3, ks=(1, 2, 3))
    assert set(r) == {"i2t_r1", "i2t_r2", "i2t_r3", "t2i_r1", "t2i_r2", "t2i_r3"}
    # i2t ranks [0, 1, 2]
    assert r["i2t_r1"] == approx(100 / 3)
    assert r["i2t_r2"] == approx(200 / 3)
    assert r["i2t_r3"] == approx(100.0)
    # t2i ranks [0, 1, 0, 2, 1, 1]
    assert r["t2i_r1"] == approx(200 / 6)
    assert r["t2i_r2"] == approx(500 / 6)
    assert r["t2i_r3"] == approx(100.0)


def test_default_keys_and_chunking_hand_case():
    full = recall_at_k(IMG3, TXT3, T2I3)
    assert list(full) == ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"]
    assert full == recall_at_k(IMG3, TXT3, T2I3, chunk_size=1)
    assert full == recall_at_k(IMG3, TXT3, T2I3, chunk_size=2)


def test_uneven_captions_per_image():
    # image 0: 1 caption, image 1: 3 captions, image 2: 2 captions
    txt = torch.tensor(
        [
            [0.2, 0.8, 0.1],  # img 0: own .2, above .8         -> t2i rank 1
            [0.1, 0.3, 0.9],  # img 1: own .3, above .9         -> rank 1
            [0.5, 0.4, 0.0],  # img 1: own .4, above .5         -> rank 1
            [0.0, 0.1, 0.2],  # img 1: own .1, above .2         -> rank 1
            [0.7, 0.0, 0.6],  # img 2: own .6, above .7         -> rank 1
            [0.3, 0.2, 0.95],  # img 2: own .95                 -> rank 0
        ]
    )
    t2i = torch.tensor([0, 1, 1, 1, 2, 2])
    # i2t columns:
    #   image 0: .2 | .1 .5 .0 .7 .3       -> own .2, above .5 .7 .3        -> rank 3
    #   image 1: .8 | .3 .4 .1 | .0 .2     -> best own .4, above .8         -> rank 1
    #   image 2: .1 .9 .0 .2 | .6 .95      -> best own .95                  -> rank 0
    r = recall_at_k(torch.eye(3), txt, t2i, ks=(1, 2, 4))
    assert r["i2t_r1"] == approx(100 / 3)
    assert r["i2t_r2"] == approx(200 / 3)
    assert r["i2t_r4"] == approx(100.0)
    assert r["t2i_r1"] == approx(100 / 6)  # ranks [1, 1, 1, 1, 1, 0]
    assert r["t2i_r2"] == approx(100.0)


def test_image_without_caption_excluded_from_i2t():
    # image 2 has no caption: only images 0, 1 count for i2t, image 2 stays a distractor
    txt = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.8]])
    t2i = torch.tensor([0, 1])
    # i2t: image 0 column (.9, .1) -> rank 0; image 1 column (.1 | .2) -> rank 0 -> 100
    # t2i: caption 0 rank 0; caption 1 own .2, above .8 (image 2) -> rank 1 -> 50
    r = recall_at_k(torch.eye(3), txt, t2i, ks=(1,))
    assert r == {"i2t_r1": approx(100.0), "t2i_r1": approx(50.0)}


def test_ties_rank_like_the_official_argsort_or_optimistically():
    # caption 0 scores both images 0.5: reversed stable argsort puts image 1 (larger index) first
    txt = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    r = recall_at_k(torch.eye(2), txt, torch.tensor([0, 1]), ks=(1,))
    assert r["t2i_r1"] == approx(50.0)
    r = recall_at_k(torch.eye(2), txt, torch.tensor([0, 1]), ks=(1,), ties="optimistic")
    assert r["t2i_r1"] == approx(100.0)  # its own image 0 still counts as rank 0
    with pytest.raises(ValueError, match="ties="):
        recall_at_k(torch.eye(2), txt, torch.tensor([0, 1]), ties="random")


def _reference(img, txt, t2i, ks):
    """Brute force with argsort over the full similarity matrix (no ties in random data)."""
    sims = img @ txt.T
    out = {}
    order = sims.argsort(dim=1, descending=True)  # image -> captions
    i2t = [t2i[order[m]].eq(m).nonzero()[0, 0].item() for m in range(img.shape[0])]
    order_t = sims.T.argsort(dim=1, descending=True)  # caption -> images
    t2i_r = [order_t[j].eq(t2i[j]).nonzero()[0, 0].item() for j in range(txt.shape[0])]
    for k in ks:
        out[f"i2t_r{k}"] = 100.0 * sum(r < k for r in i2t) / len(i2t)
    for k in ks:
        out[f"t2i_r{k}"] = 100.0 * sum(r < k for r in t2i_r) / len(t2i_r)
    return out


def _random_case(n_img=40, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 6, (n_img,), generator=g)  # 1..5 captions per image
    t2i = torch.repeat_interleave(torch.arange(n_img), counts)
    t2i = t2i[torch.randperm(len(t2i), generator=g)]
    img = torch.nn.functional.normalize(torch.randn(n_img, d, generator=g), dim=1)
    txt = torch.nn.functional.normalize(img[t2i] + 0.9 * torch.randn(len(t2i), d, generator=g), dim=1)
    return img, txt, t2i


def test_chunk_size_invariance_and_reference():
    img, txt, t2i = _random_case()
    ks = (1, 5, 10)
    big = recall_at_k(img, txt, t2i, ks=ks, chunk_size=100_000)
    assert recall_at_k(img, txt, t2i, ks=ks, chunk_size=1) == big
    assert recall_at_k(img, txt, t2i, ks=ks, chunk_size=7) == big
    ref = _reference(img, txt, t2i, ks)
    for k, v in ref.items():
        assert big[k] == approx(v), k
    assert 0.0 < big["i2t_r1"] < 100.0 and 0.0 < big["t2i_r1"] < 100.0  # a non-trivial case


def test_perfect_features_give_100():
    img = torch.eye(4)
    t2i = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    r = recall_at_k(img, img[t2i], t2i)
    assert all(v == 100.0 for v in r.values()) and len(r) == 6
    assert all(v == 100.0 for v in folded_recall(img, img[t2i], t2i, folds=2).values())


def test_folded_recall_hand_case():
    # 2 images, 1 caption each; caption 0 is closer to image 1 than to its own image 0.
    txt = torch.tensor([[0.4, 0.6], [0.0, 1.0]])
    t2i = torch.tensor([0, 1])
    whole = recall_at_k(torch.eye(2), txt, t2i, ks=(1,))
    # whole: i2t image 0 column (.4 | .0) rank 0; image 1 column (.6 | 1.0)... own 1.0 rank 0 -> 100
    #        t2i caption 0 own .4 < .6 -> rank 1; caption 1 rank 0 -> 50
    assert whole == {"i2t_r1": approx(100.0), "t2i_r1": approx(50.0)}
    # folds of one image each: every caption only sees its own image -> 100
    folded = folded_recall(torch.eye(2), txt, t2i, folds=2, ks=(1,))
    assert folded == {"i2t_r1": approx(100.0), "t2i_r1": approx(100.0)}


def test_folded_recall_is_mean_of_manual_folds():
    img, txt, t2i = _random_case(n_img=30, seed=1)
    folded = folded_recall(img, txt, t2i, folds=3, chunk_size=4)
    per_fold = []
    for lo in (0, 10, 20):
        sel = (t2i >= lo) & (t2i < lo + 10)
        per_fold.append(recall_at_k(img[lo : lo + 10], txt[sel], t2i[sel] - lo))
    assert set(folded) == set(per_fold[0])
    for k in folded:
        assert folded[k] == approx(sum(p[k] for p in per_fold) / 3), k
    # folding matters here (smaller gallery -> higher recall)
    assert folded["t2i_r1"] > recall_at_k(img, txt, t2i)["t2i_r1"]


def test_validation_errors():
    with pytest.raises(ValueError):
        folded_recall(torch.eye(3), TXT3, T2I3, folds=2)  # 3 images, 2 folds
    with pytest.raises(ValueError):
        recall_at_k(IMG3, TXT3, torch.tensor([0, 0, 1, 1, 2, 3]))  # index out of range
    with pytest.raises(ValueError):
        recall_at_k(IMG3, TXT3, T2I3[:5])  # wrong length
    with pytest.raises(ValueError):
        recall_at_k(IMG3, TXT3[:, :2], T2I3)  # feature sizes differ
