"""Image-folder datasets of the paper: an ImageNet-style class folder as a zero-shot probe
(tiered-ImageNet's held-out classes) and EuroSAT as an update task.

Also the pieces the other real datasets share: :class:`ImageFiles` (a list of image files with
labels, decoded lazily through :func:`errors.open_image`) and :func:`paper_train_transform`
(the paper's training augmentation scaled to the model's input size).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from torch.utils.data import Dataset
from torchvision import transforms as T

from ..models import ClipBundle
from .errors import DatasetMissing, open_image
from .stages import ClassificationProbe, Stage

CLASS_LIST_DIR = Path(__file__).parent / "class_lists"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# torchvision's EuroSAT folder names -> the readable names CLIP's EuroSAT evaluations use
# (eurosat_sessions(class_names="clip"); the paper protocol's names are the folder names' words).
EUROSAT_CLASSNAMES = {
    "AnnualCrop": "annual crop land",
    "Forest": "forest",
    "HerbaceousVegetation": "herbaceous vegetation land",
    "Highway": "highway or road",
    "Industrial": "industrial buildings",
    "Pasture": "pasture land",
    "PermanentCrop": "permanent crop land",
    "Residential": "residential buildings",
    "River": "river",
    "SeaLake": "sea or lake",
}


# --------------------------------------------------------------------------- shared pieces
class ImageFiles(Dataset):
    """Image files with integer labels; ``transform`` is applied to the RGB PIL image (None: the PIL image)."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        labels: Sequence[int],
        transform: Callable | None = None,
        dataset: str | None = None,
        root: str | os.PathLike | None = None,
    ):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} image paths but {len(labels)} labels")
        self.paths = [str(p) for p in paths]
        self.labels = [int(label) for label in labels]
        self.transform, self.dataset, self.root = transform, dataset, root

    @property
    def cache_key(self) -> tuple:
        """Equal for sets of the same files, labels and transform (COCO-1k and COCO-5k share their 5k images)."""
        return tuple(self.paths), tuple(self.labels), id(self.transform)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = open_image(self.paths[index], self.dataset, self.root)
        return (self.transform(image) if self.transform is not None else image), self.labels[index]


def model_image_size(clip: ClipBundle) -> tuple[int, int]:
    """The model's input size (h, w): the CenterCrop of open_clip's eval transform, else the visual tower's."""
    for step in getattr(clip.preprocess_eval, "transforms", []):
        if isinstance(step, T.CenterCrop):
            size = step.size
            return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[-1]))
    size = getattr(getattr(clip.model, "visual", None), "image_size", None)
    if size is None:
        raise ValueError(
            f"cannot find the input size of {clip.name}: no CenterCrop in preprocess_eval, no visual.image_size"
        )
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[-1]))


def paper_train_transform(clip: ClipBundle) -> T.Compose:
    """The paper's training augmentation at the model's size S: resize the shorter side to
    round(S*256/224) (bicubic), random crop S, horizontal flip, the model's mean/std (S=224: 256 / 224)."""
    height, width = model_image_size(clip)
    return T.Compose(
        [
            T.Resize(round(min(height, width) * 256 / 224), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomCrop((height, width)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(clip.image_mean, clip.image_std),
        ]
    )


def natural_key(name: str) -> list:
    """Sort key treating digit runs as numbers: ``x_9`` < ``x_10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


FILE_ORDERS = {
    "natural": lambda p: natural_key(p.name),  # x_9 before x_10
    "lexicographic": lambda p: p.name,  # Python's sorted(names), as torchvision's ImageFolder: x_10 before x_9
}


def is_hidden(path: Path) -> bool:
    """Names starting with '.' (.DS_Store, ._x.jpg, .ipynb_checkpoints) are never images or classes."""
    return path.name.startswith(".")


def list_images(folder: Path, order: str = "natural") -> list[Path]:
    """Image files directly in ``folder`` (hidden ones skipped), sorted by name in ``order``."""
    if order not in FILE_ORDERS:
        raise ValueError(f"file order '{order}' is not one of {sorted(FILE_ORDERS)}.")
    return sorted(
        (
            entry
            for entry in folder.iterdir()
            if entry.suffix.lower() in IMAGE_EXTENSIONS and entry.is_file() and not is_hidden(entry)
        ),
        key=FILE_ORDERS[order],
    )


def class_folders(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` in sorted name order (ImageFolder's class order), hidden ones skipped."""
    return sorted((d for d in folder.iterdir() if d.is_dir() and not is_hidden(d)), key=lambda d: d.name)


def _templates(templates: str | Sequence[str]) -> list[str]:
    return [templates] if isinstance(templates, str) else [str(t) for t in templates]


# --------------------------------------------------------------------------- ImageNet-style folders
def resolve_class_list(class_list: str | os.PathLike) -> Path:
    """A class-list file: a path, or the name of a shipped list (``tiered_imagenet_test``)."""
    path = Path(class_list).expanduser()
    if path.is_file():
        return path
    shipped = CLASS_LIST_DIR / f"{Path(str(class_list)).stem}.txt"
    if os.sep not in str(class_list) and shipped.is_file():
        return shipped
    known = sorted(p.stem for p in CLASS_LIST_DIR.glob("*.txt"))
    raise FileNotFoundError(f"class list '{class_list}' is neither a file nor a shipped list ({known}).")


def read_class_list(class_list: str | os.PathLike) -> list[tuple[str, str]]:
    """``(wnid, class name)`` per line ``wnid<TAB>class name``; ``#`` lines and blank lines are skipped."""
    path = resolve_class_list(class_list)
    entries, seen = [], set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rstrip("\n").split("\t", 1)
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ValueError(f"{path}:{number}: expected 'wnid<TAB>class name', got {line!r}")
        wnid, name = parts[0].strip(), parts[1].strip()
        if wnid in seen:
            raise ValueError(f"{path}:{number}: {wnid} is listed twice")
        seen.add(wnid)
        entries.append((wnid, name))
    if not entries:
        raise ValueError(f"class list {path} is empty")
    return entries


def imagenet_data_folder(folder: Path) -> Path:
    """The data folder of an ImageNet class folder: ``<data>`` for ``<data>/imagenet/train`` (the folder
    ``scripts/prepare_data.py tiered_imagenet --root`` takes, as for ``imagenet``); other folders as given."""
    folder = Path(folder)
    return folder.parent.parent if folder.parts[-2:] == ("imagenet", "train") else folder


def imagenet_folder_probe(
    clip: ClipBundle,
    name: str,
    root: str | os.PathLike,
    class_list: str | os.PathLike,
    templates: str | Sequence[str],
    split_dir: str | None = None,
    max_per_class: int | None = None,
    dataset: str = "tiered_imagenet",
) -> ClassificationProbe:
    """Zero-shot probe on ``root[/split_dir]/<wnid>/*`` for the classes of ``class_list`` (its order = labels).

    Folders not in the list are ignored; a listed class without a folder (or with no image)
    raises :class:`DatasetMissing`. ``max_per_class`` keeps the first N files (natural order)
    of each class, for cheaper evaluation.
    """
    root = Path(root).expanduser()
    folder = root / split_dir if split_dir else root
    data = imagenet_data_folder(folder)  # what prepare_data.py's --root means
    if not folder.is_dir():
        raise DatasetMissing(dataset, folder, data, "image folder")
    paths, labels, classnames = [], [], []
    for label, (wnid, classname) in enumerate(read_class_list(class_list)):
        class_dir = folder / wnid
        if not class_dir.is_dir():
            raise DatasetMissing(dataset, class_dir, data, f"class folder of '{classname}'")
        files = list_images(class_dir)
        if not files:
            raise DatasetMissing(dataset, class_dir, data, f"no images in the class folder of '{classname}'")
        if max_per_class is not None:
            files = files[:max_per_class]
        paths += files
        labels += [label] * len(files)
        classnames.append(classname)
    images = ImageFiles(paths, labels, clip.preprocess_eval, dataset, root)
    return ClassificationProbe(name, images, classnames, _templates(templates))


def tiered_imagenet_probe(
    clip: ClipBundle,
    root: str | os.PathLike,
    name: str = "tiered_imagenet",
    class_list: str | os.PathLike = "tiered_imagenet_test",
    templates: str | Sequence[str] = ("this is a photo of {} .",),
    split_dir: str | None = None,
    max_per_class: int | None = None,
) -> ClassificationProbe:
    """The paper's zero-shot probe: tiered-ImageNet's 160 test classes, prompt ``this is a photo of {} .``."""
    return imagenet_folder_probe(clip, name, root, class_list, templates, split_dir, max_per_class)


# --------------------------------------------------------------------------- EuroSAT
EUROSAT_CLASS_NAMES = ("folder", "clip")


def eurosat_readable(folder_name: str, class_names: str = "folder") -> str:
    """A EuroSAT class folder's name in prompts.

    ``folder``: the CamelCase words in lower case ("AnnualCrop" -> "annual crop"), the names the
    CL-CLIP EuroSAT code prompts with; ``clip``: CLIP's EuroSAT names ("annual crop land").
    """
    if class_names not in EUROSAT_CLASS_NAMES:
        raise ValueError(f"tasks.class_names='{class_names}' is not one of {EUROSAT_CLASS_NAMES}.")
    if class_names == "clip" and folder_name in EUROSAT_CLASSNAMES:
        return EUROSAT_CLASSNAMES[folder_name]
    words = re.findall(r"[A-Z][^A-Z]*", folder_name)
    return " ".join(words).lower() if words else folder_name.lower()


def eurosat_sessions(
    clip: ClipBundle,
    root: str | os.PathLike,
    sessions: int = 1,
    epochs: int | None = 15,
    iterations: int | None = None,
    prompt: str = "this is a satellite photo of {} .",
    test_per_class: int = 500,
    max_train_per_class: int | None = None,
    name: str = "eurosat",
    file_order: str = "lexicographic",
    class_names: str = "folder",
) -> list[Stage]:
    """EuroSAT (torchvision layout ``root/eurosat/2750/<ClassName>/<ClassName>_<n>.jpg``) as update stages.

    Classes in sorted folder order; per class the files sorted by name in ``file_order``, the
    LAST ``test_per_class`` are the test set. ``lexicographic`` is torchvision ImageFolder's order
    (``AnnualCrop_999.jpg`` after ``AnnualCrop_1000.jpg``), which CL-CLIP's EuroSAT code splits;
    ``natural`` orders by number. ``class_names``: see :func:`eurosat_readable`. ``sessions``
    must divide the number of classes (10): 1 = OST, 5 = MST with 2 classes per session; labels
    are local to their session. ``max_train_per_class`` keeps the first N training files per
    class (smoke runs). Hidden files and folders are ignored.
    """
    if file_order not in FILE_ORDERS:
        raise ValueError(f"tasks.file_order='{file_order}' is not one of {sorted(FILE_ORDERS)}.")
    eurosat_readable("AnnualCrop", class_names)  # refuses an unknown class_names before any work
    root = Path(root).expanduser()
    data = root / "eurosat" / "2750"
    if not data.is_dir():
        raise DatasetMissing("eurosat", data, root)
    class_dirs = class_folders(data)
    if not class_dirs:
        raise DatasetMissing("eurosat", data, root, "no class folders")
    if sessions < 1 or len(class_dirs) % sessions:
        raise ValueError(f"EuroSAT has {len(class_dirs)} classes: sessions={sessions} must divide it.")
    per_session = len(class_dirs) // sessions
    train_tf, test_tf = paper_train_transform(clip), clip.preprocess_eval
    stages = []
    for t in range(sessions):
        group = class_dirs[t * per_session : (t + 1) * per_session]
        split: dict[str, tuple[list, list]] = {"train": ([], []), "test": ([], [])}
        for local, class_dir in enumerate(group):
            files = list_images(class_dir, file_order)
            if len(files) <= test_per_class:
                raise ValueError(f"{class_dir} has {len(files)} images, not more than test_per_class={test_per_class}.")
            train_files, test_files = files[:-test_per_class], files[-test_per_class:]
            if max_train_per_class is not None:
                train_files = train_files[:max_train_per_class]
            for part, chosen in (("train", train_files), ("test", test_files)):
                split[part][0].extend(chosen)
                split[part][1].extend([local] * len(chosen))
        stages.append(
            Stage(
                name=f"{name}_s{t + 1}",
                classnames=[eurosat_readable(d.name, class_names) for d in group],
                train=ImageFiles(*split["train"], train_tf, "eurosat", root),
                test=ImageFiles(*split["test"], test_tf, "eurosat", root),
                train_templates=[prompt],
                epochs=epochs,
                iterations=iterations,
            )
        )
    return stages
