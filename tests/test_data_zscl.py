"""ZSCL's benchmark datasets (MTIL, CIL) on tiny fake copies written in their real on-disk formats."""

from __future__ import annotations

import importlib.util
import pickle
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate
from PIL import Image
from torchvision import transforms as T

from clipcl_runner.data import prompts
from clipcl_runner.data.errors import DatasetMissing
from clipcl_runner.data.sequences import (
    MTIL_ORDERS,
    cil_sequence,
    mtil_sequence,
    read_class_order,
    step_classes,
)
from clipcl_runner.data.vision_datasets import (
    DATASETS,
    ArrayImages,
    load_vision_dataset,
    random_split_indices,
)

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parent.parent
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
TASK_CONFIGS = [
    "mtil_order1",
    "mtil_order2",
    "cifar100_10",
    "cifar100_20",
    "cifar100_50",
    "tinyimagenet_100_5",
    "tinyimagenet_100_10",
    "tinyimagenet_100_20",
]


@pytest.fixture(scope="module")
def clip():
    """What the builders read of a ClipBundle: 16 px transforms and the normalisation."""
    eval_tf = T.Compose([T.Resize(16), T.CenterCrop(16), T.ToTensor(), T.Normalize(MEAN, STD)])
    return SimpleNamespace(
        name="fake", model=None, preprocess_eval=eval_tf, preprocess_train=eval_tf, image_mean=MEAN, image_std=STD
    )


def write_image(path: Path, seed: int, mode: str = "RGB", size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), mode).save(path)


# --------------------------------------------------------------------------- fakes in the real formats
def write_cifar100(root: Path, train_per_class: int = 2) -> list[str]:
    """cifar-100-python/{train,test,meta}: pickled dicts; a row is 1024 R, 1024 G, 1024 B bytes.
    Image pixels: R = class, G = index within its class, B = 7 (to check the layout)."""
    names = [f"class_{c:02d}" for c in range(100)]
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)

    def batch(per_class: int) -> dict:
        rows, labels = [], []
        for k in range(per_class):
            for c in range(100):
                rows.append(np.concatenate([np.full(1024, c), np.full(1024, k), np.full(1024, 7)]).astype(np.uint8))
                labels.append(c)
        return {
            "data": np.stack(rows),
            "fine_labels": labels,
            "coarse_labels": [c // 5 for c in labels],
            "filenames": [f"img_{i}.png" for i in range(len(labels))],
            "batch_label": "fake",
        }

    for part, per_class in (("train", train_per_class), ("test", 1)):
        (folder / part).write_bytes(pickle.dumps(batch(per_class), protocol=2))
    meta = {"fine_label_names": names, "coarse_label_names": [f"super_{i}" for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return names


def write_mnist(root: Path, train: int = 20, test: int = 10) -> None:
    """MNIST/raw/*-ubyte: IDX files (big-endian magic 0x803 images / 0x801 labels); digit = i % 10."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = np.arange(count, dtype=np.uint8) % 10
        images = np.zeros((count, 28, 28), dtype=np.uint8)
        images[:, 10:18, 10:18] = 40 + 20 * labels[:, None, None]
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 0x803, count, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 0x801, count) + labels.tobytes())


TINY_KNOWN = ["n02124075", "n04067472", "n04540053"]  # Egyptian Mau, fishing casting reel, volleyball
TINY_WNIDS = TINY_KNOWN + [f"n9{k:07d}" for k in range(197)]


def write_tinyimagenet(root: Path) -> None:
    """tiny-imagenet-200/{wnids.txt,words.txt,train/<wnid>/images/*.JPEG,val/val_annotations.txt,val/images/}."""
    base = root / "tiny-imagenet-200"
    wnids = TINY_WNIDS
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    words = [f"{w}\tfake thing {k}, other synonym" for k, w in enumerate(wnids[3:])] + ["n00000001\tentity"]
    (base / "words.txt").write_text("\n".join(words) + "\n")
    annotations = []
    for label, wnid in enumerate(wnids):
        for n in range(2 if label < 3 else 1):
            write_image(base / "train" / wnid / "images" / f"{wnid}_{n}.JPEG", label * 10 + n)
        (base / "train" / wnid / f"{wnid}_boxes.txt").parent.mkdir(parents=True, exist_ok=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t7\t7\n")
        name = f"val_{199 - label}.JPEG"  # file order differs from class order
        write_image(base / "val" / "images" / name, 10_000 + label)
        annotations.append(f"{name}\t{wnid}\t0\t0\t7\t7")
    (base / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")


AIRCRAFT = ["707-320", "A300B4", "Cessna 172"]


def write_aircraft(root: Path) -> None:
    """fgvc-aircraft-2013b/data/{variants.txt,images_variant_<split>.txt,images/<id>.jpg}."""
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(AIRCRAFT) + "\n")
    image_id = 1000000
    for split, per_class in (("train", 3), ("test", 2), ("val", 1)):
        lines = []
        for variant in AIRCRAFT:
            for _ in range(per_class):
                image_id += 1
                write_image(data / "images" / f"{image_id}.jpg", image_id)
                lines.append(f"{image_id} {variant}")
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")


CALTECH = ["BACKGROUND_Google", "Faces", "airplanes", "car_side", "yin_yang"]


def write_caltech101(root: Path, per_class: int = 5) -> None:
    """caltech101/101_ObjectCategories/<category>/image_0001.jpg ... (some images are greyscale)."""
    for c, category in enumerate(CALTECH):
        for n in range(1, per_class + 1):
            write_image(
                root / "caltech101" / "101_ObjectCategories" / category / f"image_{n:04d}.jpg",
                c * 100 + n,
                "L" if n == 1 else "RGB",
            )


EUROSAT = [
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
]


def write_eurosat(root: Path, per_class: int = 5) -> None:
    for c, folder in enumerate(EUROSAT):
        for n in range(1, per_class + 1):
            write_image(root / "eurosat" / "2750" / folder / f"{folder}_{n}.jpg", c * 100 + n)


def write_sun397(root: Path) -> None:
    """SUN397/ClassName.txt and SUN397/<letter>/<class path>/sun_*.jpg."""
    classes = ["/a/abbey", "/a/apartment_building/outdoor"]
    (root / "SUN397").mkdir(parents=True)
    (root / "SUN397" / "ClassName.txt").write_text("\n".join(classes) + "\n")
    for c, name in enumerate(classes):
        for n in range(5):
            write_image(root / "SUN397" / name.lstrip("/") / f"sun_{c}{n:03d}.jpg", c * 10 + n)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zscl_data")
    write_cifar100(root)
    write_mnist(root)
    write_tinyimagenet(root)
    write_aircraft(root)
    write_caltech101(root)
    write_eurosat(root)
    write_sun397(root)
    return root


def check_images(data, size: int = 16) -> None:
    for split in (data.train, data.test):
        image, label = split[0]
        assert isinstance(image, torch.Tensor) and image.shape == (3, size, size) and image.dtype == torch.float32
        assert isinstance(label, int) and 0 <= label < len(data.classnames)
        assert set(split.labels) <= set(range(len(data.classnames)))


# --------------------------------------------------------------------------- loaders
def test_cifar100_pickles(data_root, clip):
    data = load_vision_dataset("cifar100", data_root, clip.preprocess_eval, clip.preprocess_eval)
    assert data.classnames[:2] == ["class 00", "class 01"] and len(data.classnames) == 100  # underscores -> spaces
    assert len(data.train) == 200 and len(data.test) == 100 and sorted(set(data.train.labels)) == list(range(100))
    check_images(data)
    raw = load_vision_dataset("cifar100", data_root)
    image, label = raw.train[101]  # second image of class 1: R = class, G = index in class, B = 7
    assert image.mode == "RGB" and image.size == (32, 32) and label == 1
    assert image.getpixel((5, 9)) == (1, 1, 7)


def test_mnist_idx_files_become_rgb(data_root, clip):
    data = load_vision_dataset("mnist", data_root, clip.preprocess_eval, clip.preprocess_eval)
    assert data.classnames[:2] == ["0 - zero", "1 - one"] and len(data.classnames) == 10
    assert len(data.train) == 20 and len(data.test) == 10 and data.test.labels[:3] == [0, 1, 2]
    check_images(data)
    image, label = load_vision_dataset("mnist", data_root).train[3]
    assert label == 3 and image.mode == "RGB" and image.size == (28, 28)
    assert image.getpixel((12, 12)) == (100, 100, 100) and image.getpixel((0, 0)) == (0, 0, 0)
    tensor, _ = data.train[3]
    assert torch.equal(tensor[0], tensor[1]) and torch.equal(tensor[1], tensor[2])


def test_tinyimagenet_folders_and_val_annotations(data_root, clip):
    data = load_vision_dataset("tinyimagenet", data_root, clip.preprocess_eval, clip.preprocess_eval)
    assert data.classnames[:3] == ["Egyptian Mau", "fishing casting reel", "volleyball"]  # shipped names by wnid
    assert data.classnames[3] == "fake thing 0"  # unknown wnid: first synonym of words.txt
    assert len(data.classnames) == 200 and len(data.train) == 203 and len(data.test) == 200
    assert data.train.labels[:5] == [0, 0, 1, 1, 2]  # wnids.txt order
    for path, label in zip(data.test.paths, data.test.labels):  # val labels come from val_annotations.txt
        assert Path(path).name == f"val_{199 - label}.JPEG"
    check_images(data)


def test_torchvision_annotation_file_dataset_aircraft(data_root, clip):
    data = load_vision_dataset("aircraft", data_root, clip.preprocess_eval, clip.preprocess_eval)
    assert data.classnames == AIRCRAFT
    assert len(data.train) == 9 and len(data.test) == 6  # split "train", not "trainval"
    assert data.train.labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    check_images(data)


def test_torchvision_folder_datasets_with_zscl_random_split(data_root, clip):
    caltech = load_vision_dataset("caltech101", data_root, clip.preprocess_eval, clip.preprocess_eval)
    assert caltech.classnames == [
        "off-center face",
        "airplane",
        "side of a car",
        "yin and yang symbol",
    ]  # no background
    assert len(caltech.train) == 16 and len(caltech.test) == 4  # int(0.8 * 20)
    train, test = random_split_indices(20)
    all_paths = sorted(caltech.train.paths + caltech.test.paths)
    assert [Path(all_paths[i]).parts[-2:] for i in test] == [Path(p).parts[-2:] for p in caltech.test.paths]
    grey = [i for i, p in enumerate(caltech.train.paths) if p.endswith("image_0001.jpg")][0]
    assert caltech.train[grey][0].shape == (3, 16, 16)  # greyscale JPEG decoded as RGB
    eurosat = load_vision_dataset("eurosat", data_root)
    assert eurosat.classnames[2] == "brushland or shrubland" and eurosat.classnames[-1] == "lake or sea"
    assert (len(eurosat.train), len(eurosat.test)) == (40, 10)
    sun = load_vision_dataset("sun397", data_root)
    assert sun.classnames == ["abbey", "apartment building/outdoor"] and (len(sun.train), len(sun.test)) == (8, 2)
    again = load_vision_dataset("sun397", data_root)
    assert again.test.paths == sun.test.paths  # sorted before the split: the same everywhere


def test_other_torchvision_formats(tmp_path, clip, monkeypatch):
    """DTD (split lists), Food-101 (json), Oxford-IIIT Pet (annotation lines), Stanford Cars and Flowers-102 (.mat)."""
    import json

    from scipy.io import savemat

    from clipcl_runner.data import vision_datasets

    root = tmp_path / "tv"
    dtd = root / "dtd" / "dtd"
    for split, n in (("train", 1), ("val", 2), ("test", 3)):
        lines = [f"{c}/{c}_{n:04d}.jpg" for c in ("banded", "zigzagged")]
        for k, line in enumerate(lines):
            write_image(dtd / "images" / line, n * 10 + k)
        (dtd / "labels").mkdir(parents=True, exist_ok=True)
        (dtd / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
    food = root / "food-101"
    (food / "meta").mkdir(parents=True)
    for split, ids in (("train", ["1", "2"]), ("test", ["3"])):
        meta = {c: [f"{c}/{i}" for i in ids] for c in ("apple_pie", "sushi")}
        (food / "meta" / f"{split}.json").write_text(json.dumps(meta))
        for c in meta:
            for i in ids:
                write_image(food / "images" / c / f"{i}.jpg", int(i))
    pets = root / "oxford-iiit-pet"
    (pets / "annotations").mkdir(parents=True)
    for split, ids in (("trainval", [1, 2]), ("test", [3])):
        lines = []
        for label, breed in enumerate(("Abyssinian", "american_bulldog"), start=1):
            for i in ids:
                write_image(pets / "images" / f"{breed}_{i}.jpg", label * 10 + i)
                lines.append(f"{breed}_{i} {label} {label} 1")
        (pets / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    cars = root / "stanford_cars"
    (cars / "devkit").mkdir(parents=True)
    savemat(
        cars / "devkit" / "cars_meta.mat",
        {"class_names": np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], dtype=object)},
    )
    record = [("fname", "O"), ("class", "O")]
    for mat, folder in (
        (cars / "devkit" / "cars_train_annos.mat", "cars_train"),
        (cars / "cars_test_annos_withlabels.mat", "cars_test"),
    ):
        rows = np.array([(f"{k:05d}.jpg", k % 2 + 1) for k in range(1, 5)], dtype=record)
        savemat(mat, {"annotations": rows})
        for k in range(1, 5):
            write_image(cars / folder / f"{k:05d}.jpg", k)
    flowers = root / "flowers-102"
    for k in range(1, 7):
        write_image(flowers / "jpg" / f"image_{k:05d}.jpg", k)
    savemat(flowers / "imagelabels.mat", {"labels": np.array([1, 2, 102, 1, 2, 102])})
    savemat(flowers / "setid.mat", {"trnid": np.array([1, 2, 3]), "valid": np.array([4]), "tstid": np.array([5, 6])})
    monkeypatch.setattr(vision_datasets._Flowers102, "_check_integrity", lambda self: True)  # the real files' md5s

    expected = {
        "dtd": (["banded", "zigzagged"], 2, 2),
        "food": (["apple pie", "sushi"], 4, 2),
        "oxford_pet": (["Abyssinian", "American Bulldog"], 4, 2),
        "stanford_cars": (["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], 4, 4),
    }
    for name, (classnames, train, test) in expected.items():
        data = load_vision_dataset(name, root, clip.preprocess_eval, clip.preprocess_eval)
        assert (data.classnames, len(data.train), len(data.test)) == (classnames, train, test), name
        check_images(data)
    assert load_vision_dataset("stanford_cars", root).train.labels == [1, 0, 1, 0]
    flower_data = load_vision_dataset("flowers", root, clip.preprocess_eval, clip.preprocess_eval)
    assert len(flower_data.classnames) == 102 and flower_data.classnames[-1] == "blackberry lily"
    assert flower_data.train.labels == [0, 1, 101] and flower_data.test.labels == [1, 101]
    check_images(flower_data)


def test_random_split_is_zscls(data_root):
    for n in (7, 20, 1001):
        ours = random_split_indices(n)
        theirs = torch.utils.data.random_split(
            range(n), [int(0.8 * n), n - int(0.8 * n)], generator=torch.Generator().manual_seed(42)
        )
        assert ours == tuple(list(part.indices) for part in theirs)


def test_max_per_class_and_pickling(data_root, clip):
    data = load_vision_dataset(
        "tinyimagenet",
        data_root,
        clip.preprocess_eval,
        clip.preprocess_eval,
        max_train_per_class=1,
        max_test_per_class=1,
    )
    assert len(data.train) == 200 and data.train.labels[:3] == [0, 1, 2]
    first = load_vision_dataset("tinyimagenet", data_root, max_train_per_class=1).train.paths
    assert first == data.train.paths  # deterministic
    cifar = load_vision_dataset("cifar100", data_root, clip.preprocess_eval, max_train_per_class=1)
    assert len(cifar.train) == 100
    for images in (data.train, cifar.train):  # DataLoader workers receive pickled datasets
        copy = pickle.loads(pickle.dumps(images))
        assert torch.equal(copy[5][0], images[5][0]) and copy[5][1] == images[5][1]
    assert isinstance(cifar.train, ArrayImages)


def test_every_missing_dataset_names_its_prepare_command(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in DATASETS:
        with pytest.raises(DatasetMissing) as error:
            load_vision_dataset(name, empty)
        message = str(error.value)
        assert f"python scripts/prepare_data.py {name} --root {empty}" in message, name
        assert str(empty) in message and error.value.dataset == name
    assert list(empty.iterdir()) == []  # nothing created (torchvision's Caltech101 would make a folder)
    for wnid in ("n01440764", "n01443537"):  # an ImageNet with 2 of its 1000 classes
        for split in ("train", "val"):
            write_image(tmp_path / "part" / "imagenet" / split / wnid / f"{wnid}_1.JPEG", 0)
    with pytest.raises(DatasetMissing, match="not the same 1000"):
        load_vision_dataset("imagenet", tmp_path / "part")
    mnist = tmp_path / "half_mnist"
    write_mnist(mnist)
    (mnist / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetMissing, match="--download"):
        load_vision_dataset("mnist", mnist)


def test_templates_and_train_prompts():
    for name in DATASETS:
        ensemble = prompts.templates(name)
        assert all(t.count("{}") == 1 for t in ensemble) and prompts.train_template(name) == ensemble[0]
    assert len(prompts.templates("caltech101")) == 34 and len(prompts.templates("cifar100")) == 18
    assert prompts.train_template("eurosat") == "a centered satellite photo of {}."
    assert len(prompts.imagenet_names()) == 1000


# --------------------------------------------------------------------------- task sequences
def test_mtil_sequence(data_root, clip):
    stages = mtil_sequence(clip, data_root, order=["aircraft", "caltech101", "mnist"])
    assert [s.name for s in stages] == ["aircraft", "caltech101", "mnist"]
    assert all(s.iterations == 1000 and s.epochs is None for s in stages)
    assert [s.lr for s in stages] == [5e-5, 1e-5, 5e-5]  # ZSCL's rates for Aircraft and MNIST
    assert stages[0].train_templates == ["a photo of a {}, a type of aircraft."] and len(stages[0].eval_templates) == 2
    assert len(stages[1].eval_templates) == 34 and stages[1].train_templates == [stages[1].eval_templates[0]]
    assert stages[2].eval_templates == ['a photo of the number: "{}".']
    image, label = stages[2].train[0]
    assert image.shape == (3, 16, 16) and label == 0
    assert stages[0].test.transform is clip.preprocess_eval
    small = mtil_sequence(
        clip, data_root, order=["mnist"], iterations=None, epochs=2, lr=3e-6, lr_overrides={}, max_train_per_class=1
    )
    assert small[0].epochs == 2 and small[0].iterations is None and small[0].lr == 3e-6 and len(small[0].train) == 10
    assert MTIL_ORDERS["order2"][0] == "stanford_cars" and len(set(MTIL_ORDERS["order1"])) == 11


def test_mtil_missing_datasets_fail_at_start(data_root, clip, tmp_path):
    with pytest.raises(DatasetMissing) as error:
        mtil_sequence(clip, data_root, order=["mnist", "food", "stanford_cars"])
    message = str(error.value)
    assert f"prepare_data.py food --root {data_root}" in message and "food-101" in message
    assert "also missing: stanford_cars" in message
    stages = mtil_sequence(clip, tmp_path, order=["mnist"], roots={"mnist": data_root})
    assert len(stages[0].classnames) == 10


def test_cil_cifar100_ten_steps_in_class_order(data_root, clip):
    names = load_vision_dataset("cifar100", data_root).classnames
    order = read_class_order("cifar100", 100)
    assert order[:5] == [87, 0, 52, 58, 44]
    stages = cil_sequence(clip, data_root, dataset="cifar100", increment=10)
    assert len(stages) == 10 and [s.name for s in stages][:2] == ["cifar100_s1", "cifar100_s2"]
    for t, stage in enumerate(stages):
        classes = order[10 * t : 10 * t + 10]
        assert stage.classnames == [names[c] for c in classes]
        assert stage.train_templates == ["a bad photo of a {}."] == stage.eval_templates and stage.epochs == 1
        for split, per_class in ((stage.train, 2), (stage.test, 1)):
            assert isinstance(split, ArrayImages) and len(split) == 10 * per_class
            assert sorted(set(split.labels)) == list(range(10))  # local labels
            true_class = split.images[:, 0, 0, 0]  # R = the CIFAR class of the fake image
            assert [classes[y] for y in split.labels] == true_class.tolist()
    image, label = stages[3].test[0]
    assert image.shape == (3, 16, 16) and 0 <= label < 10
    assert len(cil_sequence(clip, data_root, increment=2)) == 50


def test_cil_tinyimagenet_base_then_steps(data_root, clip, tmp_path):
    order = read_class_order("tinyimagenet", 200)
    stages = cil_sequence(
        clip, data_root, dataset="tinyimagenet", initial_classes=100, increment=20, class_order="tinyimagenet"
    )
    assert [len(s.classnames) for s in stages] == [100, 20, 20, 20, 20, 20]
    names = load_vision_dataset("tinyimagenet", data_root).classnames
    assert stages[0].classnames[:2] == [names[131], names[181]] and stages[1].classnames[0] == names[order[100]]
    assert len(stages[0].test) == 100 and sorted(set(stages[1].train.labels)) == list(range(20))
    for t, first in ((0, 0), (2, 120)):  # local label k of stage t = class order[first + k]
        for path, label in zip(stages[t].train.paths, stages[t].train.labels):
            assert Path(path).parts[-3] == TINY_WNIDS[order[first + label]]
    tests = {Path(p).name: y for p, y in zip(stages[2].test.paths, stages[2].test.labels)}
    assert all(name == f"val_{199 - order[120 + y]}.JPEG" for name, y in tests.items())
    twenty = cil_sequence(clip, data_root, dataset="tinyimagenet", initial_classes=100, increment=5)
    assert [len(s.classnames) for s in twenty] == [100] + [5] * 20
    custom = tmp_path / "my_order.txt"
    custom.write_text("# a custom order\n" + " ".join(str(c) for c in reversed(range(200))) + "\n")
    reversed_stages = cil_sequence(
        clip, data_root, dataset="tinyimagenet", initial_classes=190, increment=10, class_order=str(custom)
    )
    assert reversed_stages[1].classnames == [names[c] for c in range(9, -1, -1)]


def test_cil_rejects_bad_orders_and_increments(data_root, clip):
    with pytest.raises(ValueError):
        step_classes(list(range(100)), 10, 7)
    with pytest.raises(ValueError):
        cil_sequence(clip, data_root, dataset="cifar100", class_order=[0, 1, 2])
    with pytest.raises(FileNotFoundError):
        read_class_order("no_such_order")
    assert step_classes(list(range(10)), 4, 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


# --------------------------------------------------------------------------- configs and prepare_data
@pytest.mark.parametrize("name", TASK_CONFIGS)
def test_task_configs_compose(name):
    cfg = compose_config(f"tasks={name}")
    assert cfg.tasks._target_.startswith("clipcl_runner.data.sequences.")
    if name.startswith("mtil"):
        assert list(cfg.tasks.order) == list(MTIL_ORDERS[name.replace("mtil_", "")])
        assert (
            cfg.tasks.iterations == 1000
            and cfg.tasks.lr == 1e-5
            and dict(cfg.tasks.lr_overrides) == {"aircraft": 5e-5, "mnist": 5e-5}
        )
    else:
        steps = {"cifar100_10": 10, "cifar100_20": 20, "cifar100_50": 50}.get(name)
        if steps:
            assert 100 // cfg.tasks.increment == steps and cfg.tasks.initial_classes is None
        else:
            assert cfg.tasks.initial_classes == 100 and 100 // cfg.tasks.increment == int(name.rsplit("_", 1)[1])
        assert cfg.tasks.prompt == "a bad photo of a {}." and cfg.tasks.epochs == 1


def test_task_configs_instantiate_on_the_fake_data(data_root, clip):
    cifar = compose_config("tasks=cifar100_20", f"tasks.root={data_root}")
    assert len(instantiate(cifar.tasks, clip=clip)) == 20
    tiny = compose_config("tasks=tinyimagenet_100_10", f"tasks.root={data_root}", "tasks.max_train_per_class=1")
    assert [len(s.classnames) for s in instantiate(tiny.tasks, clip=clip)] == [100] + [10] * 10
    mtil = compose_config("tasks=mtil_order2", f"tasks.root={data_root}", "tasks.order=[mnist,aircraft,cifar100]")
    assert [s.lr for s in instantiate(mtil.tasks, clip=clip)] == [5e-5, 5e-5, 1e-5]


def test_prepare_data_checks_zscl_datasets(data_root, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("prepare_data", REPO / "scripts" / "prepare_data.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    assert prepare.main(["mnist", "--root", str(data_root)]) == 0
    assert "10 classes, 20 train / 10 test" in capsys.readouterr().out
    assert prepare.main(["tinyimagenet", "--root", str(data_root)]) == 0
    assert prepare.main(["cifar100", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "cifar-100-python" in out and "--download" in out and "cifar-100-python.tar.gz" in out
    assert prepare.main(["stanford_cars", "--root", str(tmp_path), "--download"]) == 1
    out = capsys.readouterr().out
    assert "cannot be downloaded automatically" in out and "cars_test_annos_withlabels.mat" in out
    assert prepare.main(["tinyimagenet", "--root", str(tmp_path)]) == 1
    assert "tiny-imagenet-200.zip" in capsys.readouterr().out
