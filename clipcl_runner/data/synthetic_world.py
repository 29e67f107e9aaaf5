"""A deterministic synthetic image–caption world: 32×32 RGB images, one object each.

Spec: ``docs/synthetic_world.md``. Every image shows one coloured shape of a given
size and position over a patterned grey background, and every caption names some of these
attributes. Known shapes and (shape, colour) pairs are for pretraining; ``HELD_OUT_PAIRS``
never occur in pretraining (zero-shot / retrieval probes), and ``NOVEL_SHAPES`` are only
drawn and named by the continual tasks.

Everything is a pure function of a seed: each set owns its own ``numpy.random.Generator``
streams, so a set does not depend on how many other sets were made before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw

# --------------------------------------------------------------------------- attributes

KNOWN_SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "diamond", "ring", "arrow", "crescent")
NOVEL_SHAPES = (
    "hourglass",
    "chevron",
    "frame",
    "semicircle",
    "house",
    "lightning",
    "cloud",
    "tree",
    "hexagon",
    "bowtie",
    "kite",
    "pentagon",
)
ALL_SHAPES = KNOWN_SHAPES + NOVEL_SHAPES
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown", "white")
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 230, 40),
    "green": (40, 175, 50),
    "cyan": (40, 215, 225),
    "blue": (40, 70, 230),
    "purple": (140, 40, 200),
    "pink": (250, 135, 195),
    "brown": (135, 75, 25),
    "white": (245, 245, 245),
}
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
BACKGROUNDS = ("plain", "striped", "dotted", "checkered", "noisy")

NOVEL_TASKS = (
    ("hourglass", "chevron", "frame"),
    ("semicircle", "house", "lightning"),
    ("cloud", "tree", "hexagon"),
    ("bowtie", "kite", "pentagon"),
)

# Shape i is held out with colours i and i+3 (mod 10): two colours per shape, and each
# colour is held out for exactly two shapes, so no shape or colour is unseen in pretraining.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    (shape, COLOURS[(i + k) % len(COLOURS)]) for i, shape in enumerate(KNOWN_SHAPES) for k in (0, 3)
)
SEEN_PAIRS: tuple[tuple[str, str], ...] = tuple(
    sorted((s, c) for s in KNOWN_SHAPES for c in COLOURS if (s, c) not in HELD_OUT_PAIRS)
)

# --------------------------------------------------------------------------- geometry

IMAGE_SIZE = 32
_SUPERSAMPLE = 2  # draw at 64 px and box-downsample: cheap anti-aliasing
_CANVAS = IMAGE_SIZE * _SUPERSAMPLE
_RADIUS_PX = {"small": 12.0, "large": 19.0}  # object extent at 64 px (unit disc radius)
_OFFSET_PX = 13.0  # distance of an off-centre position from the canvas centre, at 64 px
_POSITION_DIR = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1), "center": (0, 0)}
_MAX_ROTATION_DEG = 15.0
_MAX_JITTER_PX = 2.0
_TARGET_AREA = 1.3  # unit² (the unit disc is π): shapes are scaled towards a common area

# A shape is a list of (op, polygon) parts drawn in order: "+" fills, "-" erases. Polygons
# are (k, 2) arrays in y-up unit coordinates; _shapes() centres and scales them.
_Part = tuple[str, np.ndarray]


def _ngon(n: int, r: float = 1.0, start_deg: float = 90.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    t = np.deg2rad(start_deg) + 2 * np.pi * np.arange(n) / n
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _circle(r: float, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    return _ngon(48, r, 0.0, cx, cy)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=float)


def _poly(*points: tuple[float, float]) -> np.ndarray:
    return np.array(points, dtype=float)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, y], axis=1) / 16.0


def _star(points: int = 5, inner: float = 0.48) -> np.ndarray:
    outer = _ngon(points, 1.0, 90.0)
    inner_pts = _ngon(points, inner, 90.0 + 180.0 / points)
    return np.stack([outer, inner_pts], axis=1).reshape(-1, 2)


def _half_disc() -> np.ndarray:
    t = np.linspace(0, np.pi, 25)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _raw_shapes() -> dict[str, list[_Part]]:
    """Shape outlines. Designed so that no two look alike at 32 px even after ±15° rotation."""
    return {
        # known
        "circle": [("+", _circle(1.0))],
        "square": [("+", _rect(-1, -1, 1, 1))],
        "triangle": [("+", _ngon(3, 1.0, 90.0))],
        "star": [("+", _star())],
        "cross": [("+", _rect(-1, -0.32, 1, 0.32)), ("+", _rect(-0.32, -1, 0.32, 1))],
        "heart": [("+", _heart())],
        "diamond": [("+", _poly((0, 1), (0.6, 0), (0, -1), (-0.6, 0)))],  # tall, never a tilted square
        "ring": [("+", _circle(1.0)), ("-", _circle(0.58))],
        "arrow": [("+", _rect(-1, -0.28, 0.05, 0.28)), ("+", _poly((0.0, 0.75), (1, 0), (0.0, -0.75)))],
        "crescent": [("+", _circle(1.0)), ("-", _circle(0.85, 0.5, 0.15))],
        # novel
        "hourglass": [
            ("+", _poly((-0.7, 1), (0.7, 1), (0.12, 0), (0.7, -1), (-0.7, -1), (-0.12, 0))),
            ("+", _rect(-0.85, 0.85, 0.85, 1.05)),
            ("+", _rect(-0.85, -1.05, 0.85, -0.85)),
        ],
        "chevron": [("+", _poly((-0.9, -0.2), (0, 0.8), (0.9, -0.2), (0.9, -1), (0, 0.0), (-0.9, -1)))],
        "frame": [("+", _rect(-1, -1, 1, 1)), ("-", _rect(-0.56, -0.56, 0.56, 0.56))],
        "semicircle": [("+", _half_disc())],
        "house": [
            ("+", _rect(-0.6, -0.9, 0.6, 0.15)),
            ("+", _poly((-0.95, 0.1), (0, 0.95), (0.95, 0.1))),
            ("-", _rect(-0.17, -0.9, 0.17, -0.35)),
        ],  # wide eaves and a door: not a pentagon
        "lightning": [
            ("+", _poly((-0.05, 1), (0.75, 1), (0.3, 0.3), (0.75, 0.3), (-0.45, -1), (-0.1, -0.1), (-0.6, -0.1)))
        ],
        "cloud": [
            ("+", _circle(0.42, -0.55, -0.1)),
            ("+", _circle(0.55, 0.0, 0.15)),
            ("+", _circle(0.42, 0.55, -0.05)),
            ("+", _rect(-0.55, -0.52, 0.55, -0.1)),
        ],
        "tree": [
            ("+", _poly((-0.9, -0.45), (0.9, -0.45), (0, 0.35))),
            ("+", _poly((-0.7, 0.05), (0.7, 0.05), (0, 1))),
            ("+", _rect(-0.2, -1, 0.2, -0.4)),
        ],
        "hexagon": [("+", _ngon(6, 1.0, 0.0))],
        "bowtie": [
            ("+", _poly((-1, 0.7), (0, 0), (-1, -0.7))),
            ("+", _poly((1, 0.7), (0, 0), (1, -0.7))),
            ("+", _rect(-0.22, -0.28, 0.22, 0.28)),
        ],
        "kite": [("+", _poly((0, 1), (0.72, 0.4), (0, -1), (-0.72, 0.4)))],  # widest high up, unlike diamond
        "pentagon": [("+", _ngon(5, 1.0, 90.0))],
    }


def _draw_parts(
    draw: ImageDraw.ImageDraw, parts: list[_Part], cx: float, cy: float, radius: float, rotation_deg: float
) -> None:
    """Rotate (counter-clockwise), scale and place unit-coordinate parts on a mask image."""
    a = np.deg2rad(rotation_deg)
    c, s = np.cos(a), np.sin(a)
    # y-up unit coordinates -> image coordinates (y down), rotation folded into one matrix.
    m = radius * np.array([[c, -s], [-s, -c]])
    for op, pts in parts:
        xy = pts @ m.T + (cx, cy)
        draw.polygon(xy.ravel().tolist(), fill=255 if op == "+" else 0)


def _enclosing_centre(points: np.ndarray, steps: int = 400) -> np.ndarray:
    """Approximate centre of the smallest enclosing circle (Badoiu–Clarkson iteration)."""
    centre = points.mean(0)
    for i in range(1, steps + 1):
        far = points[np.argmax(np.linalg.norm(points - centre, axis=1))]
        centre = centre + (far - centre) / (i + 1)
    return centre


def _fit_unit(parts: list[_Part]) -> list[_Part]:
    """Centre on the smallest circle around the filled parts and scale it to the unit disc,
    so every rotation stays inside the disc and compact shapes use as much of it as they can."""
    filled = np.concatenate([p for op, p in parts if op == "+"])
    centre = _enclosing_centre(filled)
    scale = 1.0 / np.linalg.norm(filled - centre, axis=1).max()
    return [(op, (p - centre) * scale) for op, p in parts]


def _unit_area(parts: list[_Part], res: int = 256) -> float:
    mask = Image.new("L", (res, res), 0)
    _draw_parts(ImageDraw.Draw(mask), parts, res / 2, res / 2, res / 2, 0.0)
    return float((np.asarray(mask) > 127).sum()) / (res / 2) ** 2


@lru_cache(maxsize=1)
def _shapes() -> dict[str, list[_Part]]:
    """Normalised shapes: inside the unit disc, and shrunk towards a common area so that
    object size does not give the shape away (thin shapes that cannot reach it stay smaller)."""
    out = {}
    for name, parts in _raw_shapes().items():
        parts = _fit_unit(parts)
        k = min(1.0, float(np.sqrt(_TARGET_AREA / _unit_area(parts))))
        out[name] = [(op, p * k) for op, p in parts]
    return out


@cache
def _extent(shape: str) -> float:
    """Radius of the filled part of a normalised shape (≤ 1), for keeping it on the canvas."""
    return max(float(np.linalg.norm(p, axis=1).max()) for op, p in _shapes()[shape] if op == "+")


def _object_mask(shape: str, canvas: int, cx: float, cy: float, radius: float, rotation_deg: float) -> Image.Image:
    mask = Image.new("L", (canvas, canvas), 0)
    _draw_parts(ImageDraw.Draw(mask), _shapes()[shape], cx, cy, radius, rotation_deg)
    return mask


def shape_mask(shape: str, size_px: int = 64, rotation: float = 0.0) -> np.ndarray:
    """Boolean (size_px, size_px) mask of a shape centred on the canvas, unit disc = canvas.

    Drawn at 2× and box-downsampled, then thresholded at half coverage (same geometry as
    ``render``), so masks at small sizes show what the model actually sees.
    """
    _check(shape, ALL_SHAPES, "shape")
    big = size_px * _SUPERSAMPLE
    mask = _object_mask(shape, big, big / 2, big / 2, big / 2, rotation)
    return np.asarray(mask.resize((size_px, size_px), Image.BOX)) >= 128


# --------------------------------------------------------------------------- scenes & rendering


def _check(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {list(allowed)}")


@dataclass(frozen=True)
class Scene:
    """The discrete content of one image. Continuous nuisances (rotation, jitter, colour
    jitter, background grey level, tint and pattern phase) are drawn by ``render``."""

    shape: str
    colour: str
    size: str
    position: str
    background: str

    def __post_init__(self) -> None:
        _check(self.shape, ALL_SHAPES, "shape")
        _check(self.colour, COLOURS, "colour")
        _check(self.size, SIZES, "size")
        _check(self.position, POSITIONS, "position")
        _check(self.background, BACKGROUNDS, "background")


_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)


def _pattern(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean-ish (32, 32) texture with modest contrast, so it never reads as an object."""
    if kind == "plain":
        return np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    if kind == "striped":
        angle = rng.choice([0.0, 45.0, 90.0, 135.0]) + rng.uniform(-5, 5)
        period, phase, amp = rng.uniform(4, 7), rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.09)
        a = np.deg2rad(angle)
        u = _XX * np.cos(a) + _YY * np.sin(a)
        return amp * np.clip(3 * np.sin(2 * np.pi * u / period + phase), -1, 1)
    if kind == "dotted":
        period, r = rng.uniform(5, 8), rng.uniform(0.9, 1.4)
        ox, oy = rng.uniform(0, period, 2)
        amp = rng.uniform(0.08, 0.13) * rng.choice([-1.0, 1.0])  # light or dark dots
        dx = (_XX + ox) % period - period / 2
        dy = (_YY + oy) % period - period / 2
        return amp * np.clip(r + 0.5 - np.hypot(dx, dy), 0, 1)
    if kind == "checkered":
        cell, amp = rng.integers(3, 7), rng.uniform(0.04, 0.07)
        ox, oy = rng.integers(0, cell, 2)
        return amp * (2.0 * (((_XX + ox) // cell + (_YY + oy) // cell) % 2) - 1)
    if kind == "noisy":
        return rng.uniform(0.04, 0.08) * rng.standard_normal((IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    raise ValueError(f"unknown background {kind!r}")


def _background(kind: str, rng: np.random.Generator) -> np.ndarray:
    # Grey 0.15–0.55 keeps both white/yellow and brown/blue objects in clear contrast.
    grey = rng.uniform(0.15, 0.55)
    tint = rng.uniform(-0.04, 0.04, 3)
    pattern = _pattern(kind, rng)
    return np.clip((grey + tint).astype(np.float32) + pattern[:, :, None], 0.0, 1.0)


def _object_alpha(scene: Scene, rotation: float, jitter: np.ndarray) -> np.ndarray:
    radius = _RADIUS_PX[scene.size]
    dx, dy = _POSITION_DIR[scene.position]
    centre = _CANVAS / 2 + _OFFSET_PX * np.array([dx, dy]) + jitter
    reach = radius * _extent(scene.shape)  # rotation-proof: the shape lies inside this circle
    centre = np.clip(centre, reach, _CANVAS - reach)
    mask = _object_mask(scene.shape, _CANVAS, centre[0], centre[1], radius, rotation)
    small = mask.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)
    return np.asarray(small, dtype=np.float32)[:, :, None] / 255.0


def render(scene: Scene, rng: np.random.Generator, *, draw_object: bool = True) -> np.ndarray:
    """Render ``scene`` as a uint8 (32, 32, 3) image; nuisances come from ``rng``.

    ``draw_object=False`` returns the same background alone (same ``rng`` draws), which
    is useful for contrast checks.
    """
    background = _background(scene.background, rng)
    rgb = np.clip(np.array(COLOUR_RGB[scene.colour]) + rng.integers(-20, 21, 3), 0, 255) / 255.0
    rotation = rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG)
    jitter = rng.uniform(-_MAX_JITTER_PX, _MAX_JITTER_PX, 2)
    image = background
    if draw_object:
        alpha = _object_alpha(scene, rotation, jitter)
        image = background * (1.0 - alpha) + rgb.astype(np.float32) * alpha
    return (image * 255.0 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- captions

_TEMPLATES = ("a photo of {np}{pos}{bg}", "an image of {np}{pos}{bg}", "there is {np}{pos}{bg}", "{np}{pos}{bg}")
_POSITION_PHRASE = {
    "left": " on the left",
    "right": " on the right",
    "top": " at the top",
    "bottom": " at the bottom",
    "center": " in the center",
}
_GENERIC_NOUNS = ("shape", "object")
_P_SHAPE, _P_COLOUR, _P_OTHER = 0.85, 0.75, 0.45  # probability that an attribute is named
_P_PERIOD = 0.5  # class prompts end with "." ("a photo of a {}."), so both forms are seen


def article(word: str) -> str:
    """ "a" or "an" by sound; "hourglass" has a silent h."""
    return "an" if word[0] in "aeiou" or word == "hourglass" else "a"


def noun_phrase(*words: str) -> str:
    """Words with the right article, e.g. noun_phrase("orange", "star") -> "an orange star"."""
    return f"{article(words[0])} {' '.join(words)}"


def caption(scene: Scene, rng: np.random.Generator, full: bool = False) -> str:
    """One caption for ``scene``. ``full=True`` names every attribute (retrieval probe);
    otherwise each attribute is dropped at random so partial descriptions are in-distribution."""
    # A fixed number of draws per caption whatever is kept: streams stay aligned.
    u = rng.random(7)
    named = full or u[0] < _P_SHAPE
    noun = scene.shape if named else _GENERIC_NOUNS[int(u[1] * len(_GENERIC_NOUNS))]
    words = [scene.size] if full or u[2] < _P_OTHER else []
    if full or u[3] < _P_COLOUR:
        words.append(scene.colour)
    words.append(noun)
    pos = _POSITION_PHRASE[scene.position] if full or u[4] < _P_OTHER else ""
    bg = f" on a {scene.background} background" if full or u[5] < _P_OTHER else ""
    template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
    text = template.format(np=noun_phrase(*words), pos=pos, bg=bg)
    return text + "." if u[6] < _P_PERIOD else text


# --------------------------------------------------------------------------- sets


def split_seed(base_seed: int, split: str) -> int:
    """A seed for one named split ("pretrain", "probe", "task1", ...), stable across
    processes and Python versions (unlike ``hash``); fits in 31 bits for every RNG API."""
    digest = hashlib.sha256(f"{int(base_seed)}/{split}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class SyntheticSet:
    images: torch.Tensor  # uint8 (N, 3, 32, 32)
    shapes: list[str]
    colours: list[str]
    scenes: list[Scene]
    captions: list[list[str]]  # captions_per_image texts per image (empty lists if 0)

    def __len__(self) -> int:
        return len(self.scenes)

    def labels(self, classnames: Sequence[str], key: str) -> torch.Tensor:
        """Class indices into ``classnames`` for key "shape", "colour" or "pair"
        (pair class names read "{colour} {shape}", e.g. "red star")."""
        if key == "shape":
            values = self.shapes
        elif key == "colour":
            values = self.colours
        elif key == "pair":
            values = [pair_name(s, c) for s, c in zip(self.shapes, self.colours)]
        else:
            raise ValueError(f"unknown label key {key!r}; expected 'shape', 'colour' or 'pair'")
        index = {name: i for i, name in enumerate(classnames)}
        missing = sorted(set(values) - index.keys())
        if missing:
            raise ValueError(f"{key} value(s) {missing} not among classnames {list(classnames)}")
        return torch.tensor([index[v] for v in values], dtype=torch.long)


def pair_name(shape: str, colour: str) -> str:
    return f"{colour} {shape}"


def _balanced(items: list, n: int, rng: np.random.Generator) -> list:
    """n draws from items with counts differing by at most one, in random order."""
    cycle = [items[i] for i in rng.permutation(len(items))]
    drawn = [cycle[i % len(cycle)] for i in range(n)]
    return [drawn[i] for i in rng.permutation(n)]


def _draw_scenes(n: int, pairs, shapes, rng: np.random.Generator) -> list[Scene]:
    # Sorted first: a set's iteration order changes with PYTHONHASHSEED, and must not matter.
    if pairs is not None:
        shape_colour = _balanced(sorted(tuple(p) for p in pairs), n, rng)
    else:
        chosen = _balanced(sorted(shapes), n, rng)
        colours = rng.integers(len(COLOURS), size=n)
        shape_colour = [(s, COLOURS[c]) for s, c in zip(chosen, colours)]
    sizes, positions, backgrounds = (rng.integers(len(v), size=n) for v in (SIZES, POSITIONS, BACKGROUNDS))
    return [
        Scene(s, c, SIZES[a], POSITIONS[b], BACKGROUNDS[d])
        for (s, c), a, b, d in zip(shape_colour, sizes, positions, backgrounds)
    ]


def make_set(
    n: int,
    *,
    seed: int,
    pairs: Sequence[tuple[str, str]] | None = None,
    shapes: Sequence[str] | None = None,
    captions_per_image: int = 0,
    full_captions: bool = False,
) -> SyntheticSet:
    """n images whose (shape, colour) comes from ``pairs``, or whose shape comes from
    ``shapes`` with any colour (give exactly one). Classes are balanced exactly; size,
    position and background are uniform. Deterministic in ``seed``."""
    if (pairs is None) == (shapes is None):
        raise ValueError("give exactly one of pairs= or shapes=")
    if n < 0 or captions_per_image < 0:
        raise ValueError("n and captions_per_image must be non-negative")
    classes = pairs if pairs is not None else shapes
    if len(classes) == 0:
        raise ValueError("pairs/shapes must not be empty")
    # Separate streams: images do not change when captions_per_image does, and vice versa.
    scene_rng, image_rng, caption_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    scenes = _draw_scenes(n, pairs, shapes, scene_rng)  # Scene validates every name
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for i, scene in enumerate(scenes):
        images[i] = render(scene, image_rng)
    captions = [[caption(sc, caption_rng, full=full_captions) for _ in range(captions_per_image)] for sc in scenes]
    return SyntheticSet(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        shapes=[sc.shape for sc in scenes],
        colours=[sc.colour for sc in scenes],
        scenes=scenes,
        captions=captions,
    )


# --------------------------------------------------------------------------- replay vocabulary

_CLASS_TEMPLATES = ("a photo of {np}.", "a photo of {np}", "an image of {np}.", "there is {np}.", "{np}.", "{np}")


def _class_prompts(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Zero-shot style prompts over known shapes, colours and the given pairs."""
    subjects: list[tuple[str, ...]] = [(s,) for s in KNOWN_SHAPES]
    subjects += [(c, noun) for c in COLOURS for noun in _GENERIC_NOUNS]
    subjects += [(c, s) for s, c in pairs]
    subjects += [(size, *words) for size in SIZES for words in list(subjects)]
    prompts = [t.format(np=noun_phrase(*w)) for t in _CLASS_TEMPLATES for w in subjects]
    # A few full descriptions such as "a small blue circle on the left".
    prompts += [noun_phrase(size, c, s) + _POSITION_PHRASE[p] for s, c in pairs for size in SIZES for p in POSITIONS]
    return prompts


def replay_vocabulary(n: int = 2000, *, seed: int = 0, include_held_out: bool = False) -> list[str]:
    """``n`` unique texts for vocabulary replay: half class-style prompts, half
    pretraining-style captions of seen pairs. Never names a novel shape.

    Colour+shape prompts use SEEN_PAIRS only unless ``include_held_out``: replaying the
    exact held-out prompts would directly protect what the zero-shot probe measures.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    pairs = SEEN_PAIRS + (tuple(sorted(HELD_OUT_PAIRS)) if include_held_out else ())
    prompts = list(dict.fromkeys(_class_prompts(pairs)))
    chosen = [prompts[i] for i in rng.permutation(len(prompts))[: n // 2]]
    vocab = dict.fromkeys(chosen)
    for _ in range(50 * n):
        if len(vocab) >= n:
            break
        s, c = SEEN_PAIRS[rng.integers(len(SEEN_PAIRS))]
        scene = Scene(s, c, SIZES[rng.integers(2)], POSITIONS[rng.integers(5)], BACKGROUNDS[rng.integers(5)])
        vocab[caption(scene, rng)] = None
    if len(vocab) < n:
        raise ValueError(f"could only make {len(vocab)} unique texts, asked for {n}")
    texts = list(vocab)
    return [texts[i] for i in rng.permutation(n)]
