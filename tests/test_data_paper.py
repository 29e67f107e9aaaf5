"""The paper's real datasets on tiny fake copies written in their real on-disk formats (no download)."""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipcl_runner.data import coco_crops, karpathy
from clipcl_runner.data.coco_crops import CocoCrops, build_crop_index, coco_sessions, load_crop_index
from clipcl_runner.data.errors import CorruptImage, DataFormatError, DatasetMissing, open_image
from clipcl_runner.data.folders import (
    eurosat_sessions,
    imagenet_folder_probe,
    natural_key,
    read_class_list,
    tiered_imagenet_probe,
)
from clipcl_runner.data.karpathy import coco_retrieval_probe, flickr30k_retrieval_probe, karpathy_retrieval_probe
from clipcl_runner.data.stages import ClassificationProbe, RetrievalProbe

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clip():
    from clipcl_runner.models import load_open_clip

    return load_open_clip("SynthCLIP-RN-Tiny")  # random init, 32 px, no download


def write_jpeg(path: Path, width: int, height: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


# --------------------------------------------------------------------------- fake COCO 2014
# Category order in the file deliberately differs from id order.
CATEGORIES = [
    {"supercategory": "animal", "id": 24, "name": "zebra"},
    {"supercategory": "vehicle", "id": 2, "name": "bicycle"},
    {"supercategory": "vehicle", "id": 5, "name": "airplane"},
    {"supercategory": "person", "id": 1, "name": "person"},
]
LABEL = {c["id"]: i for i, c in enumerate(CATEGORIES)}
W, H = 48, 40
TRAIN_IMAGES = {1: "COCO_train2014_000000000001.jpg", 2: "COCO_train2014_000000000002.jpg"}
VAL_IMAGES = {  # id -> (file name, Karpathy split)
    101: ("COCO_val2014_000000000101.jpg", "test"),
    102: ("COCO_val2014_000000000102.jpg", "test"),
    103: ("COCO_val2014_000000000103.jpg", "val"),
    104: ("COCO_val2014_000000000104.jpg", "restval"),
}
# (annotation id, image id, category id, bbox); the kept ones are wider AND taller than 4 px.
TRAIN_ANNS = [
    (1, 1, 24, [2, 3, 10, 12]),
    (2, 1, 2, [20.4, 5.6, 8.2, 9.1]),
    (3, 1, 5, [0, 0, 4, 20]),  # 4 px wide: excluded
    (4, 2, 1, [5, 5, 30, 3]),  # 3 px tall: excluded
    (5, 2, 5, [30, 20, 5, 5]),  # 5x5: kept
    (6, 2, 1, [1, 1, 40, 30]),
    (7, 2, 2, [10, 10, 6, 7]),
]
VAL_ANNS = [
    (11, 101, 24, [0, 0, 10, 10]),
    (12, 101, 1, [5, 5, 20, 20]),
    (13, 101, 2, [1, 1, 4, 4]),  # excluded
    (14, 102, 5, [10, 12, 15, 9]),
    (15, 102, 2, [2, 2, 6, 6]),
    (16, 103, 24, [3, 3, 12, 12]),  # Karpathy val
    (17, 104, 1, [3, 3, 12, 12]),  # restval
]


def sentences(image_id: int, count: int = 5) -> list[dict]:
    return [{"raw": f"  Caption {k} OF Image {image_id}. ", "tokens": []} for k in range(count)]


def write_instances(path: Path, images: dict, anns: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "info": {},
        "licenses": [],
        "images": [{"id": i, "file_name": name, "width": W, "height": H} for i, name in images.items()],
        "annotations": [
            {"id": a, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0, "segmentation": []}
            for a, i, c, b in anns
        ],
        "categories": CATEGORIES,
    }
    path.write_text(json.dumps(payload))


@pytest.fixture()
def coco_root(tmp_path) -> Path:
    root = tmp_path / "coco"
    for image_id, name in TRAIN_IMAGES.items():
        write_jpeg(root / "train2014" / name, W, H, image_id)
    for image_id, (name, _) in VAL_IMAGES.items():
        write_jpeg(root / "val2014" / name, W, H, image_id)
    write_instances(root / "annotations" / "instances_train2014.json", TRAIN_IMAGES, TRAIN_ANNS)
    write_instances(
        root / "annotations" / "instances_val2014.json", {i: n for i, (n, _) in VAL_IMAGES.items()}, VAL_ANNS
    )
    karpathy = [
        {
            "filepath": "val2014",
            "filename": name,
            "cocoid": i,
            "split": split,
            "sentences": sentences(i, 6 if i == 101 else 5),
        }
        for i, (name, split) in VAL_IMAGES.items()
    ] + [
        {"filepath": "train2014", "filename": name, "cocoid": i, "split": "train", "sentences": sentences(i)}
        for i, name in TRAIN_IMAGES.items()
    ]
    (root / "dataset_coco.json").write_text(json.dumps({"images": karpathy, "dataset": "coco"}))
    return root


def expected_ids(anns, keep_images=None):
    return [a for a, i, _, b in anns if b[2] > 4 and b[3] > 4 and (keep_images is None or i in keep_images)]


def test_coco_crop_index_splits_and_size_filter(coco_root):
    index = load_crop_index(coco_root, "train")
    assert index.categories == ["zebra", "bicycle", "airplane", "person"]  # file order, not id order
    assert index.category_ids == [24, 2, 5, 1]
    assert [r.annotation_id for r in index.records] == expected_ids(TRAIN_ANNS) == [1, 2, 5, 6, 7]
    assert all(r.label == LABEL[r.category_id] for r in index.records)
    test = build_crop_index(coco_root, "test")
    assert [r.annotation_id for r in test] == expected_ids(VAL_ANNS, {101, 102}) == [11, 12, 14, 15]
    assert all(r.image.startswith("val2014/") for r in test)
    assert [r.annotation_id for r in build_crop_index(coco_root, "val")] == [16]
    assert [r.annotation_id for r in build_crop_index(coco_root, "restval")] == [17]
    # a float box [20.4, 5.6, 8.2, 9.1]: each corner rounded as PIL.crop does (CL-CLIP's crops)
    assert index.records[1].box == (20, 6, 29, 15)
    assert load_crop_index(coco_root, "train", box_rounding="cover").records[1].box == (20, 5, 29, 15)


def test_coco_crop_pixels_equal_the_box(coco_root):
    records = build_crop_index(coco_root, "train")
    crops = CocoCrops(coco_root, records, transform=None)
    assert len(crops) == len(records)
    for position in (0, 1, 2):
        crop, label = crops[position]
        record = records[position]
        source = np.asarray(open_image(coco_root / record.image))
        left, upper, right, lower = record.box
        assert np.array_equal(np.asarray(crop), source[upper:lower, left:right])
        assert label == record.label


def test_coco_index_cache_is_reused_and_invalidated(coco_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = build_crop_index(coco_root, "test", cache_dir=cache)
    assert len(list(cache.glob("coco_crops_test_*.json"))) == 1
    calls = []
    real = coco_crops._build_index
    monkeypatch.setattr(coco_crops, "_build_index", lambda *a: calls.append(a) or real(*a))
    assert build_crop_index(coco_root, "test", cache_dir=cache) == first
    assert calls == []  # served from the cache: the instances JSON was not parsed again
    build_crop_index(coco_root, "test", min_size=2, cache_dir=cache)
    assert len(calls) == 1  # other parameters, other entry
    karpathy = coco_root / "dataset_coco.json"
    karpathy.write_text(karpathy.read_text() + "\n")  # size (and mtime) change -> rebuilt
    build_crop_index(coco_root, "test", cache_dir=cache)
    assert len(calls) == 2


def test_coco_sessions_local_labels_and_transforms(coco_root, clip, tmp_path):
    stages = coco_sessions(clip, coco_root, sessions=2, epochs=1, cache_dir=tmp_path / "cache")
    assert [s.classnames for s in stages] == [["zebra", "bicycle"], ["airplane", "person"]]
    assert [s.name for s in stages] == ["coco_s1", "coco_s2"]
    assert stages[0].train_templates == ["this is a photo of {} in the scene ."]
    # session 1: train crops of zebra (ann 1) and bicycle (2, 7); test: zebra (11), bicycle (15)
    assert [r.annotation_id for r in stages[0].train.records] == [1, 2, 7]
    assert stages[0].train.labels == [0, 1, 1]
    assert [r.annotation_id for r in stages[0].test.records] == [11, 15]
    assert stages[0].test.labels == [0, 1]
    # session 2: airplane (5) and person (6); test: person (12), airplane (14) -- labels local 0..1
    assert stages[1].train.labels == [0, 1]
    assert [r.annotation_id for r in stages[1].test.records] == [12, 14]
    assert stages[1].test.labels == [1, 0]
    image, label = stages[0].train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 0
    image, label = stages[1].test[0]
    assert image.shape == (3, 32, 32) and label == 1
    ost = coco_sessions(clip, coco_root, sessions=1, epochs=1)
    assert len(ost) == 1 and ost[0].classnames == ["zebra", "bicycle", "airplane", "person"]
    assert len(ost[0].train) == 5 and len(ost[0].test) == 4
    capped = coco_sessions(clip, coco_root, sessions=1, epochs=1, max_per_class=1)
    assert sorted(capped[0].train.labels) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        coco_sessions(clip, coco_root, sessions=3, epochs=1)


def test_coco_karpathy_retrieval(coco_root, clip):
    probe = coco_retrieval_probe(clip, coco_root, name="coco1k", folds=2)
    assert isinstance(probe, RetrievalProbe) and probe.folds == 2
    assert len(probe.dataset) == 2  # the two Karpathy test images, file order
    assert len(probe.captions) == 10  # 5 per image (image 101 has 6: the first 5 are kept)
    assert probe.captions[0] == "caption 0 of image 101." and probe.captions[5] == "caption 0 of image 102."
    assert "caption 5 of image 101." not in probe.captions
    assert probe.text_to_image.tolist() == [0] * 5 + [1] * 5
    image, label = probe.dataset[1]
    assert image.shape == (3, 32, 32) and label == 0
    assert probe.dataset.paths[1].endswith("val2014/COCO_val2014_000000000102.jpg")
    five_k = coco_retrieval_probe(clip, coco_root, name="coco5k", folds=1, max_images=1)
    assert len(five_k.dataset) == 1 and five_k.text_to_image.tolist() == [0] * 5
    with pytest.raises(ValueError, match="folds"):
        coco_retrieval_probe(clip, coco_root, folds=5)
    val = karpathy_retrieval_probe(clip, "val", coco_root, "dataset_coco.json", True, split="val")
    assert len(val.dataset) == 1


def test_tokenizer_truncates_long_captions(clip):
    tokens = clip.tokenizer(["a very long caption " * 40])
    assert tokens.shape == (1, clip.context_length)
    assert int(tokens[0, -1]) == clip.tokenizer.eot_token_id  # cut to the context, EOT kept


def test_flickr30k_retrieval(tmp_path, clip):
    root = tmp_path / "flickr30k"
    entries = []
    for k, split in enumerate(["train", "test", "test", "val"]):
        name = f"{1000 + k}.jpg"
        write_jpeg(root / "flickr30k-images" / name, 20, 16, k)
        entries.append({"filename": name, "imgid": k, "split": split, "sentences": sentences(k)})
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))
    probe = flickr30k_retrieval_probe(clip, root)
    assert probe.folds == 1 and len(probe.dataset) == 2 and len(probe.captions) == 10
    assert probe.dataset.paths[0].endswith("flickr30k-images/1001.jpg")
    assert probe.text_to_image.tolist() == [0] * 5 + [1] * 5
    assert probe.dataset[0][0].shape == (3, 32, 32)


# --------------------------------------------------------------------------- folders
def test_imagenet_folder_probe(tmp_path, clip):
    root = tmp_path / "imagenet" / "train"
    for wnid, count in (("n00000001", 3), ("n00000002", 2), ("n00000999", 1)):
        for k in range(count):
            write_jpeg(root / wnid / f"{wnid}_{k}.JPEG", 10, 10, k)
    class_list = tmp_path / "classes.txt"
    class_list.write_text("# comment\nn00000002\tsecond class\nn00000001\tfirst class\n")
    probe = imagenet_folder_probe(clip, "tiered", root.parent, class_list, ["a photo of a {}."], split_dir="train")
    assert isinstance(probe, ClassificationProbe)
    assert probe.classnames == ["second class", "first class"] and probe.templates == ["a photo of a {}."]
    assert probe.dataset.labels == [0, 0, 1, 1, 1]  # the unlisted folder is ignored
    image, label = probe.dataset[0]
    assert image.shape == (3, 32, 32) and label == 0
    capped = imagenet_folder_probe(clip, "t", root, class_list, "x {}", max_per_class=1)
    assert capped.dataset.labels == [0, 1] and capped.templates == ["x {}"]
    class_list.write_text("n00000001\tfirst\nn00000777\tabsent class\n")
    with pytest.raises(DatasetMissing) as missing:
        imagenet_folder_probe(clip, "tiered", root, class_list, ["{}"])
    assert "n00000777" in str(missing.value)
    assert "python scripts/prepare_data.py tiered_imagenet --root" in str(missing.value)


def test_shipped_tiered_imagenet_class_list(tmp_path, clip):
    classes = read_class_list("tiered_imagenet_test")
    assert len(classes) == 160 and len({w for w, _ in classes}) == 160
    assert len({n for _, n in classes}) == 160 and all(w.startswith("n") and len(w) == 9 for w, _ in classes)
    with pytest.raises(DatasetMissing):
        tiered_imagenet_probe(clip, tmp_path / "nowhere")


def eurosat_root(tmp_path: Path, per_class: int = 12) -> Path:
    root = tmp_path / "eurosat_root"
    from clipcl_runner.data.folders import EUROSAT_CLASSNAMES

    for c, folder in enumerate(EUROSAT_CLASSNAMES):
        for n in range(1, per_class + 1):
            write_jpeg(root / "eurosat" / "2750" / folder / f"{folder}_{n}.jpg", 8, 8, c * 100 + n)
    return root


def test_eurosat_split_and_sessions(tmp_path, clip):
    assert sorted(["a_10", "a_9", "a_1"], key=natural_key) == ["a_1", "a_9", "a_10"]
    root = eurosat_root(tmp_path)
    (ost,) = eurosat_sessions(clip, root, sessions=1, epochs=1, test_per_class=5)
    assert ost.classnames[0] == "annual crop" and ost.classnames[-1] == "sea lake" and len(ost.classnames) == 10
    assert ost.train_templates == ["this is a satellite photo of {} ."]
    assert len(ost.train) == 70 and len(ost.test) == 50
    (natural,) = eurosat_sessions(clip, root, sessions=1, epochs=1, test_per_class=5, file_order="natural")
    annual_test = [Path(p).name for p, y in zip(natural.test.paths, natural.test.labels) if y == 0]
    assert annual_test == [f"AnnualCrop_{n}.jpg" for n in range(8, 13)]  # the last 5 by number (_10 after _9)
    annual_train = [Path(p).name for p, y in zip(natural.train.paths, natural.train.labels) if y == 0]
    assert annual_train == [f"AnnualCrop_{n}.jpg" for n in range(1, 8)]
    stages = eurosat_sessions(clip, root, sessions=5, epochs=1, test_per_class=5, class_names="clip")
    assert len(stages) == 5 and all(len(s.classnames) == 2 for s in stages)
    assert stages[1].classnames == ["herbaceous vegetation land", "highway or road"]
    assert sorted(set(stages[4].train.labels)) == [0, 1] and sorted(set(stages[4].test.labels)) == [0, 1]
    image, label = stages[2].train[0]
    assert image.shape == (3, 32, 32) and label == 0
    with pytest.raises(ValueError):
        eurosat_sessions(clip, root, sessions=3, epochs=1, test_per_class=5)
    with pytest.raises(ValueError):
        eurosat_sessions(clip, root, sessions=1, epochs=1)  # 12 images, not more than 500 test


# --------------------------------------------------------------------------- errors
def test_missing_dataset_messages(tmp_path, clip):
    with pytest.raises(DatasetMissing) as error:
        build_crop_index(tmp_path / "no_coco", "train")
    message = str(error.value)
    assert "instances_train2014.json" in message
    assert f"python scripts/prepare_data.py coco --root {tmp_path / 'no_coco'}" in message
    assert "dataset_coco.json" in message  # what to fetch by hand
    assert isinstance(error.value, FileNotFoundError)
    with pytest.raises(DatasetMissing, match="prepare_data.py eurosat"):
        eurosat_sessions(clip, tmp_path / "no_eurosat")
    with pytest.raises(DatasetMissing, match="prepare_data.py flickr30k"):
        flickr30k_retrieval_probe(clip, tmp_path / "no_flickr")
    restored = pickle.loads(pickle.dumps(error.value))
    assert str(restored) == message


def test_missing_and_corrupt_images_name_the_file(coco_root, tmp_path):
    records = build_crop_index(coco_root, "test")
    crops = CocoCrops(coco_root, records)
    broken = coco_root / records[0].image
    broken.write_bytes(b"this is not a jpeg")
    with pytest.raises(CorruptImage) as error:
        crops[0]
    assert str(broken) in str(error.value)
    assert str(pickle.loads(pickle.dumps(error.value))) == str(error.value)
    truncated = tmp_path / "truncated.jpg"
    write_jpeg(tmp_path / "full.jpg", 64, 64, 0)
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:600])
    with pytest.raises(CorruptImage, match="truncated.jpg"):
        open_image(truncated)
    gone = coco_root / records[-1].image
    gone.unlink()
    with pytest.raises(DatasetMissing) as error:
        crops[len(crops) - 1]
    assert gone.name in str(error.value) and "prepare_data.py coco" in str(error.value)
    val_dir = coco_root / "val2014"
    for f in val_dir.iterdir():
        f.unlink()
    val_dir.rmdir()
    with pytest.raises(DatasetMissing, match="val2014"):
        CocoCrops(coco_root, records)


def test_bad_annotation_files_name_the_file_and_the_fix(coco_root, tmp_path, clip):
    """A truncated instances file, a truncated Karpathy split and an unknown category id: each error names
    the file and what to do (fetch it again; the prepare command), not a bare JSONDecodeError/KeyError."""
    instances = coco_root / "annotations" / "instances_val2014.json"
    good = instances.read_text()
    instances.write_text(good[: len(good) // 2])  # a download cut in the middle
    with pytest.raises(DataFormatError) as error:
        build_crop_index(coco_root, "test")
    message = str(error.value)
    assert str(instances) in message and "not valid JSON" in message
    assert f"prepare_data.py coco --root {coco_root}" in message and "fetch this file again" in message
    assert str(pickle.loads(pickle.dumps(error.value))) == message  # crosses DataLoader workers intact

    payload = json.loads(good)
    payload["annotations"][0]["category_id"] = 99  # no such category in "categories"
    instances.write_text(json.dumps(payload))
    with pytest.raises(DataFormatError) as error:
        build_crop_index(coco_root, "test")
    message = str(error.value)
    assert str(instances) in message and "category id 99" in message and "[1, 2, 5, 24]" in message
    assert "annotations_trainval2014.zip" in message
    instances.write_text(good)

    split_file = coco_root / "dataset_coco.json"
    split_file.write_text(split_file.read_text()[:100])
    for build in (lambda: build_crop_index(coco_root, "test"), lambda: coco_retrieval_probe(clip, coco_root)):
        with pytest.raises(DataFormatError) as error:
            build()
        assert str(split_file) in str(error.value) and "not valid JSON" in str(error.value)
    flickr = tmp_path / "flickr"
    (flickr / "flickr30k-images").mkdir(parents=True)
    (flickr / "dataset_flickr30k.json").write_text('{"images": [{"split": "test", "filename": "1.jpg"}]}')
    with pytest.raises(DataFormatError) as error:  # an entry without its sentences
        flickr30k_retrieval_probe(clip, flickr)
    assert str(flickr / "dataset_flickr30k.json") in str(error.value) and "'sentences'" in str(error.value)
    assert "prepare_data.py flickr30k" in str(error.value)


def test_coco_module_still_exports_the_split_names():
    """data/coco.py was split into coco_crops (update tasks) and karpathy (retrieval); old imports resolve."""
    from clipcl_runner.data import coco

    assert coco.coco_sessions is coco_sessions and coco.crop_box is coco_crops.crop_box
    assert coco.coco_retrieval_probe is coco_retrieval_probe and coco.paper_probes is karpathy.paper_probes


# --------------------------------------------------------------------------- scripts/prepare_data.py
@pytest.fixture(scope="module")
def prepare():
    spec = importlib.util.spec_from_file_location("prepare_data", REPO / "scripts" / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_data_reports_what_is_missing(coco_root, tmp_path, prepare, capsys):
    assert prepare.main(["coco", "--root", str(coco_root)]) == 0
    assert "OK: coco is complete" in capsys.readouterr().out
    (coco_root / "val2014" / VAL_IMAGES[102][0]).unlink()
    assert prepare.main(["coco", "--root", str(coco_root)]) == 1
    out = capsys.readouterr().out
    assert VAL_IMAGES[102][0] in out and "val2014.zip" in out
    (coco_root / "dataset_coco.json").unlink()
    assert prepare.main(["coco", "--root", str(coco_root), "--quick"]) == 1
    out = capsys.readouterr().out
    assert "dataset_coco.json" in out and "caption_datasets.zip" in out
    assert prepare.main(["eurosat", "--root", str(tmp_path / "none")]) == 1  # no --download: nothing fetched
    assert "--download" in capsys.readouterr().out
    assert prepare.main(["eurosat", "--root", str(eurosat_root(tmp_path, per_class=1))]) == 0
    assert prepare.main(["flickr30k", "--root", str(tmp_path / "none")]) == 1
    imagenet = tmp_path / "imagenet"
    classes = tmp_path / "classes.txt"
    classes.write_text("n00000001\tone\n")
    assert prepare.main(["tiered_imagenet", "--root", str(imagenet), "--class-list", str(classes)]) == 1
    write_jpeg(imagenet / "n00000001" / "a.JPEG", 8, 8, 0)
    assert prepare.main(["tiered_imagenet", "--root", str(imagenet), "--class-list", str(classes)]) == 0


def test_runner_evaluator_consumes_the_real_datasets(coco_root, clip, tmp_path):
    from clipcl_runner.evaluation import Evaluator

    stages = coco_sessions(clip, coco_root, sessions=2, epochs=1)
    probes = karpathy.paper_probes(clip, coco_root=coco_root, coco_folds=2)
    evaluator = Evaluator(stages, probes, clip.tokenizer, torch.device("cpu"), batch_size=4, task_head="all")
    metrics = evaluator(clip.model, completed_stages=1)
    assert {"task/coco_s1/acc", "task/coco_s2/acc", "ret/coco1k/i2t_r1", "ret/coco1k/t2i_r10"} <= set(metrics)
