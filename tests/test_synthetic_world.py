"""Tests for the synthetic image–caption world (clipcl_runner.data.synthetic_world)."""

from __future__ import annotations

import itertools
import re
from collections import Counter

import numpy as np
import pytest
import torch

from clipcl_runner.data import synthetic_world as w
from clipcl_runner.data.synthetic_world import (
    ALL_SHAPES,
    BACKGROUNDS,
    COLOURS,
    HELD_OUT_PAIRS,
    KNOWN_SHAPES,
    NOVEL_SHAPES,
    NOVEL_TASKS,
    POSITIONS,
    SEEN_PAIRS,
    SIZES,
    Scene,
    caption,
    make_set,
    render,
    replay_vocabulary,
    shape_mask,
    split_seed,
)

WORD = re.compile(r"[a-z]+")


def _scenes(n: int, seed: int = 0, shapes=ALL_SHAPES) -> list[Scene]:
    rng = np.random.default_rng(seed)
    pick = lambda values: values[rng.integers(len(values))]  # noqa: E731
    return [Scene(pick(shapes), pick(COLOURS), pick(SIZES), pick(POSITIONS), pick(BACKGROUNDS)) for _ in range(n)]


# ---------------------------------------------------------------- attributes and splits


def test_attribute_tables():
    assert len(KNOWN_SHAPES) == 10 and len(NOVEL_SHAPES) == 12 and len(COLOURS) == 10
    assert not set(KNOWN_SHAPES) & set(NOVEL_SHAPES)
    assert [s for task in NOVEL_TASKS for s in task] == list(NOVEL_SHAPES)
    assert set(w.COLOUR_RGB) == set(COLOURS)
    rgb = np.array([w.COLOUR_RGB[c] for c in COLOURS], dtype=float)
    gaps = [np.abs(a - b).sum() for a, b in itertools.combinations(rgb, 2)]
    assert min(gaps) > 60  # base colours far apart compared with the ±20 jitter


def test_held_out_pairs_balanced_and_disjoint():
    assert len(HELD_OUT_PAIRS) == 20
    assert Counter(s for s, _ in HELD_OUT_PAIRS) == {s: 2 for s in KNOWN_SHAPES}
    assert Counter(c for _, c in HELD_OUT_PAIRS) == {c: 2 for c in COLOURS}
    assert len(SEEN_PAIRS) == 80 and list(SEEN_PAIRS) == sorted(SEEN_PAIRS)
    assert not set(SEEN_PAIRS) & HELD_OUT_PAIRS
    assert set(SEEN_PAIRS) | HELD_OUT_PAIRS == set(itertools.product(KNOWN_SHAPES, COLOURS))


def test_split_seed_stable_and_distinct():
    # A fixed value: hash() would differ between processes, sha256 does not.
    assert split_seed(0, "pretrain") == 1759150649
    seeds = {split_seed(b, s) for b in range(3) for s in ("pretrain", "probe", "task1", "task2")}
    assert len(seeds) == 12
    assert all(0 <= s < 2**31 for s in seeds)


# ---------------------------------------------------------------- sets


def test_make_set_deterministic():
    a = make_set(40, seed=3, pairs=SEEN_PAIRS, captions_per_image=2)
    b = make_set(40, seed=3, pairs=SEEN_PAIRS, captions_per_image=2)
    c = make_set(40, seed=4, pairs=SEEN_PAIRS, captions_per_image=2)
    assert a.images.dtype == torch.uint8 and a.images.shape == (40, 3, 32, 32)
    assert a.images.numpy().tobytes() == b.images.numpy().tobytes()
    assert a.scenes == b.scenes and a.captions == b.captions
    assert not torch.equal(a.images, c.images) and a.scenes != c.scenes
    assert all(len(caps) == 2 for caps in a.captions)


def test_make_set_ignores_class_order():
    # Sets (e.g. HELD_OUT_PAIRS) iterate in a per-process order; the result must not depend on it.
    a = make_set(30, seed=6, pairs=SEEN_PAIRS)
    b = make_set(30, seed=6, pairs=list(reversed(SEEN_PAIRS)))
    assert a.scenes == b.scenes and torch.equal(a.images, b.images)
    c = make_set(30, seed=6, shapes=set(NOVEL_SHAPES))
    d = make_set(30, seed=6, shapes=NOVEL_SHAPES[::-1])
    assert c.scenes == d.scenes


def test_images_do_not_depend_on_caption_count():
    a = make_set(20, seed=5, shapes=KNOWN_SHAPES, captions_per_image=0)
    b = make_set(20, seed=5, shapes=KNOWN_SHAPES, captions_per_image=3)
    assert torch.equal(a.images, b.images) and a.scenes == b.scenes
    assert a.captions == [[]] * 20


def test_seen_pair_set_excludes_held_out_and_is_balanced():
    s = make_set(250, seed=0, pairs=SEEN_PAIRS)
    pairs = Counter(zip(s.shapes, s.colours))
    assert not set(pairs) & HELD_OUT_PAIRS
    assert set(pairs) == set(SEEN_PAIRS)
    assert max(pairs.values()) - min(pairs.values()) <= 1
    assert s.shapes == [sc.shape for sc in s.scenes] and s.colours == [sc.colour for sc in s.scenes]
    # Other attributes are drawn uniformly: all values occur.
    assert {sc.background for sc in s.scenes} == set(BACKGROUNDS)
    assert {sc.position for sc in s.scenes} == set(POSITIONS)


def test_shape_set_balanced_with_all_colours():
    s = make_set(100, seed=1, shapes=NOVEL_TASKS[0])
    counts = Counter(s.shapes)
    assert set(counts) == set(NOVEL_TASKS[0]) and max(counts.values()) - min(counts.values()) <= 1
    assert set(s.colours) == set(COLOURS)


def test_make_set_rejects_bad_arguments():
    with pytest.raises(ValueError):
        make_set(4, seed=0)
    with pytest.raises(ValueError):
        make_set(4, seed=0, pairs=SEEN_PAIRS, shapes=KNOWN_SHAPES)
    with pytest.raises(ValueError, match="dragon"):
        make_set(4, seed=0, shapes=["dragon"])
    with pytest.raises(ValueError, match="mauve"):
        make_set(4, seed=0, pairs=[("star", "mauve")])


def test_labels():
    s = make_set(30, seed=2, pairs=SEEN_PAIRS)
    shape_y = s.labels(list(KNOWN_SHAPES), "shape")
    assert shape_y.dtype == torch.long
    assert [KNOWN_SHAPES[i] for i in shape_y] == s.shapes
    assert [COLOURS[i] for i in s.labels(COLOURS, "colour")] == s.colours
    names = [f"{c} {sh}" for sh, c in SEEN_PAIRS]
    assert [names[i] for i in s.labels(names, "pair")] == [f"{c} {sh}" for sh, c in zip(s.shapes, s.colours)]
    missing = s.shapes[0]
    with pytest.raises(ValueError, match=missing):
        s.labels([x for x in KNOWN_SHAPES if x != missing], "shape")
    with pytest.raises(ValueError):
        s.labels(KNOWN_SHAPES, "size")


# ---------------------------------------------------------------- rendering


def test_scene_validates_names():
    with pytest.raises(ValueError):
        Scene("dragon", "red", "small", "left", "plain")
    with pytest.raises(ValueError):
        Scene("star", "red", "medium", "left", "plain")


def _object_diff(scene: Scene, seed: int) -> np.ndarray:
    """Per-pixel L1 difference between the image and its background alone."""
    img = render(scene, np.random.default_rng(seed)).astype(int)
    bg = render(scene, np.random.default_rng(seed), draw_object=False).astype(int)
    return np.abs(img - bg).sum(-1)


def test_object_contrasts_with_background():
    # Every colour on every background, small objects: at least 20 pixels clearly differ.
    for i, (colour, background) in enumerate(itertools.product(COLOURS, BACKGROUNDS)):
        for k in range(4):
            diff = _object_diff(Scene("circle", colour, "small", "center", background), seed=10 * i + k)
            assert (diff > 60).sum() >= 20, (colour, background, k)


def test_render_respects_position_and_size():
    centroids = {}
    for pos in POSITIONS:
        diff = _object_diff(Scene("square", "red", "small", pos, "plain"), seed=1)
        ys, xs = np.nonzero(diff > 60)
        centroids[pos] = (xs.mean(), ys.mean())
    cx, cy = centroids["center"]
    assert 13 < cx < 19 and 13 < cy < 19
    assert centroids["left"][0] < cx - 4 and centroids["right"][0] > cx + 4
    assert centroids["top"][1] < cy - 4 and centroids["bottom"][1] > cy + 4
    small = (_object_diff(Scene("circle", "white", "small", "center", "plain"), seed=2) > 60).sum()
    large = (_object_diff(Scene("circle", "white", "large", "center", "plain"), seed=2) > 60).sum()
    assert large > 2 * small


def test_objects_stay_on_canvas():
    # A large object at an edge position must not touch the opposite border nor be cut off:
    # its footprint is about as big as the same object in the centre.
    for shape in ("square", "cross", "lightning"):
        ref = (_object_diff(Scene(shape, "white", "large", "center", "plain"), seed=3) > 30).sum()
        for pos in ("left", "right", "top", "bottom"):
            area = (_object_diff(Scene(shape, "white", "large", pos, "plain"), seed=3) > 30).sum()
            assert area > 0.85 * ref, (shape, pos)


def test_shapes_are_distinct():
    masks = {s: shape_mask(s, size_px=20) for s in ALL_SHAPES}
    assert all(m.dtype == bool and m.shape == (20, 20) for m in masks.values())
    areas = np.array([m.sum() for m in masks.values()])
    assert areas.min() > 0.5 * areas.max()  # no shape is a speck next to another
    for a, b in itertools.combinations(ALL_SHAPES, 2):
        ma, mb = masks[a], masks[b]
        assert (ma != mb).mean() > 0.02, (a, b)
        assert (ma != mb).sum() / (ma | mb).sum() > 0.05, (a, b)  # 1 - IoU


def test_shape_mask_rotation():
    assert (shape_mask("square", 64, 15.0) != shape_mask("square", 64, 0.0)).sum() > 50
    assert (shape_mask("circle", 64, 15.0) != shape_mask("circle", 64, 0.0)).sum() < 20


# ---------------------------------------------------------------- captions


def _an_ok(text: str) -> bool:
    for art, word in re.findall(r"\b(a|an) ([a-z]+)", text):
        wants_an = word[0] in "aeiou" or word == "hourglass"
        if (art == "an") != wants_an:
            return False
    return True


def test_full_captions_name_everything():
    rng = np.random.default_rng(0)
    for scene in _scenes(200):
        text = caption(scene, rng, full=True)
        words = WORD.findall(text)
        assert scene.shape in words and scene.colour in words and scene.size in words, text
        assert scene.background in words and scene.position in words, text
        assert _an_ok(text), text


def test_partial_captions_drop_attributes():
    rng = np.random.default_rng(1)
    scenes = _scenes(2000, seed=1)
    texts = [caption(sc, rng) for sc in scenes]
    named_shape = np.mean([sc.shape in WORD.findall(t) for sc, t in zip(scenes, texts)])
    named_colour = np.mean([sc.colour in WORD.findall(t) for sc, t in zip(scenes, texts)])
    named_bg = np.mean([sc.background in WORD.findall(t) for sc, t in zip(scenes, texts)])
    assert 0.80 < named_shape < 0.90
    assert 0.70 < named_colour < 0.80
    assert 0.40 < named_bg < 0.50
    assert any(" object" in t for t in texts) and any(" shape" in t for t in texts)
    assert len(set(texts)) > 1000
    for t in texts:
        assert t == t.lower() and t == t.strip() and "  " not in t, t
        assert _an_ok(t), t
    assert {"an orange", "an hourglass", "an arrow"} <= {m for t in texts for m in re.findall(r"an [a-z]+", t)}


# ---------------------------------------------------------------- replay vocabulary


def test_replay_vocabulary():
    vocab = replay_vocabulary(2000, seed=0)
    assert len(vocab) == 2000 and len(set(vocab)) == 2000
    assert vocab == replay_vocabulary(2000, seed=0)
    assert vocab != replay_vocabulary(2000, seed=1)
    words = {x for t in vocab for x in WORD.findall(t)}
    assert not words & set(NOVEL_SHAPES)
    assert set(KNOWN_SHAPES) <= words and set(COLOURS) <= words
    # Class-style prompts and pretraining-style captions are both there.
    assert "a photo of a star." in vocab or "a photo of a star" in vocab
    assert any(" background" in t for t in vocab)
    # Held-out combinations stay out unless asked for.
    held = {f"{c} {s}" for s, c in HELD_OUT_PAIRS}
    assert not any(h in t for t in vocab for h in held)
    assert any(h in t for t in replay_vocabulary(2000, include_held_out=True) for h in held)
    small = replay_vocabulary(10, seed=3)
    assert len(small) == 10 and len(set(small)) == 10
