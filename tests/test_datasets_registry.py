"""One record per dataset: the registry in clipcl_runner/data/datasets/ and everything that reads it.

The toy-dataset test is the contract of README's "extend" section: a new MTIL-style dataset is one
registered DatasetSpec (here registered inside the test) plus a task sequence naming it; prompts, the
missing-data error, the task builder and scripts/prepare_data.py all find it through the registry.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import REPO, compose_config
from hydra.utils import instantiate
from PIL import Image
from torchvision import transforms as T

from clipcl_runner.data import datasets, prompts
from clipcl_runner.data.datasets.readers import train_test_folders
from clipcl_runner.data.errors import FETCH_HINTS, DatasetMissing
from clipcl_runner.data.sequences import mtil_sequence
from clipcl_runner.data.vision_datasets import DATASET_FOLDERS, load_vision_dataset

BUILT_IN = (
    "aircraft",
    "caltech101",
    "cifar10",
    "cifar100",
    "dtd",
    "eurosat",
    "flowers",
    "food",
    "imagenet",
    "mnist",
    "oxford_pet",
    "stanford_cars",
    "sun397",
    "tinyimagenet",
)
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
TOY = "toy_shapes"
TOY_HINT = "Toy shapes are drawn by hand: put them in <root>/toy_shapes/{train,test}/<class>/*.png"


@pytest.fixture()
def clip():
    """What the task builders read of a ClipBundle: 16 px transforms and the normalisation."""
    eval_tf = T.Compose([T.Resize(16), T.CenterCrop(16), T.ToTensor(), T.Normalize(MEAN, STD)])
    return SimpleNamespace(
        name="fake", model=None, preprocess_eval=eval_tf, preprocess_train=eval_tf, image_mean=MEAN, image_std=STD
    )


@pytest.fixture()
def toy_spec():
    """A dataset registered by the test only (no file of the package changes), removed afterwards."""
    spec = datasets.register(
        datasets.DatasetSpec(
            name=TOY,
            folder="toy_shapes",
            read=train_test_folders(TOY),
            templates=("a drawing of a {}.", "a sketch of the {}."),
            fetch_hint=TOY_HINT,
            split="folders train / test",
        )
    )
    yield spec
    datasets.unregister(TOY)


def write_toy(root: Path, per_class: dict[str, tuple[int, int]]) -> Path:
    for c, (name, (train, test)) in enumerate(per_class.items()):
        for split, count in (("train", train), ("test", test)):
            for k in range(count):
                path = root / "toy_shapes" / split / name / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = np.full((8, 8, 3), 40 * c + k, dtype=np.uint8)
                Image.fromarray(pixels).save(path)
    return root


def load_prepare():
    spec = importlib.util.spec_from_file_location("prepare_data", REPO / "scripts" / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_toy_dataset_is_one_record_and_a_task_sequence(toy_spec, clip, tmp_path, capsys):
    data = write_toy(tmp_path / "data", {"circle": (3, 2), "square_box": (2, 1)})

    # prompts and the live views of the older modules read the record
    assert prompts.templates(TOY) == ["a drawing of a {}.", "a sketch of the {}."]
    assert prompts.train_template(TOY) == "a drawing of a {}."
    assert DATASET_FOLDERS[TOY] == "toy_shapes" and FETCH_HINTS[TOY] == TOY_HINT

    # a task YAML naming it: composed by Hydra, built by the MTIL builder
    cfg = compose_config("tasks=mtil_order1", f"tasks.root={data}", f"tasks.order=[{TOY},{TOY}]", "tasks.iterations=3")
    first, again = instantiate(cfg.tasks, clip=clip)
    assert first.name == TOY and first.classnames == ["circle", "square box"]  # the default clean-up: spaced
    assert first.train_templates == ["a drawing of a {}."] and first.eval_templates == prompts.templates(TOY)
    assert (first.iterations, first.lr) == (3, 1e-5)
    assert first.train.labels == [0, 0, 0, 1, 1] and first.test.labels == [0, 0, 1]
    image, label = first.test[2]
    assert image.shape == (3, 16, 16) and label == 1
    assert again.classnames == first.classnames

    # the missing-data error: its prepare command and its fetch hint with the folder filled in
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetMissing) as error:
        mtil_sequence(clip, empty, order=[TOY])
    message = str(error.value)
    assert f"python scripts/prepare_data.py {TOY} --root {empty}" in message
    assert f"put them in {empty}/toy_shapes/{{train,test}}/<class>/*.png" in message

    # scripts/prepare_data.py: offered as a choice, checked the way the runner reads it, hint when missing
    prepare = load_prepare()
    assert TOY in prepare.dataset_names()
    assert prepare.main([TOY, "--root", str(data)]) == 0
    out = capsys.readouterr().out
    assert "2 classes, 5 train / 3 test images" in out and "split: folders train / test" in out
    assert prepare.main([TOY, "--root", str(empty), "--download"]) == 1
    out = capsys.readouterr().out
    assert "cannot be downloaded automatically" in out and f"put them in {empty}/toy_shapes" in out


def test_a_dataset_is_known_only_while_registered(toy_spec, tmp_path):
    data = write_toy(tmp_path, {"a": (1, 1), "b": (1, 1)})
    assert load_vision_dataset(TOY, data).classnames == ["a", "b"]
    datasets.unregister(TOY)
    with pytest.raises(KeyError, match=f"unknown dataset '{TOY}'; known: aircraft, caltech101"):
        load_vision_dataset(TOY, data)
    with pytest.raises(KeyError):
        prompts.templates(TOY)
    assert TOY not in DATASET_FOLDERS


def test_toy_test_classes_must_match_train(toy_spec, tmp_path):
    data = write_toy(tmp_path, {"a": (1, 1), "b": (1, 0)})
    with pytest.raises(DatasetMissing, match="class folders differ"):
        load_vision_dataset(TOY, data)


def test_registering_a_second_spec_under_a_name_is_refused(toy_spec):
    other = datasets.DatasetSpec(name=TOY, folder="elsewhere", read=toy_spec.read, templates=("{}",), fetch_hint="")
    with pytest.raises(ValueError, match="already registered; pass replace=True"):
        datasets.register(other)
    assert datasets.register(other, replace=True) is datasets.get(TOY) is other
    with pytest.raises(ValueError, match="needs a name and a folder"):
        datasets.register(datasets.DatasetSpec(name="x", folder="", read=toy_spec.read, templates=(), fetch_hint=""))


def test_every_built_in_record_is_complete():
    """The fourteen files of data/datasets/ each registered a usable record."""
    import torchvision.datasets as tv

    assert set(BUILT_IN) <= set(datasets.names())
    for name in BUILT_IN:
        spec = datasets.get(name)
        assert spec.name == name and spec.folder and spec.split, name
        templates = spec.template_list()
        assert templates and all(t.count("{}") == 1 for t in templates), name
        hint = spec.hint()
        assert "<root>" in hint and "<name>" not in hint, name
        if spec.download is not None:  # the torchvision class prepare_data.py downloads with
            assert spec.torchvision_class() is getattr(tv, spec.download), name
            assert f"prepare_data.py {name} --root <root> --download" in hint, name
    downloadable = {n for n in BUILT_IN if datasets.get(n).download}
    assert downloadable == set(BUILT_IN) - {"stanford_cars", "tinyimagenet", "imagenet"}
    assert datasets.get("cifar100").class_names(["aquarium_fish"], raw=True) == ["aquarium_fish"]
    assert datasets.get("cifar100").class_names(["aquarium_fish"]) == ["aquarium fish"]
    assert datasets.get("food").class_names(["apple_pie"], raw=True) == ["apple pie"]  # raw only where the record says


def test_the_registry_loads_without_torch():
    """errors.py reads fetch hints through the registry: the registry module itself stays light."""
    code = "import sys, clipcl_runner.data.datasets.registry; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr
