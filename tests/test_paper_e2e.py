"""The paper's experiments end to end on tiny fake datasets in the real on-disk formats,
with a small real open_clip architecture at random init (no weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import compose_config
from test_data_paper import sentences, write_jpeg

from clipcl_runner.runner import run

CATEGORIES = [
    {"supercategory": "x", "id": cid, "name": name}
    for cid, name in [(24, "zebra"), (2, "bicycle"), (5, "airplane"), (1, "person")]
]
SIZE = 48


def write_coco(root: Path) -> int:
    """2 train images, 5 Karpathy-test and 1 val image, every image with one box per category."""
    karpathy, crops = [], {"train": 0, "test": 0}
    for split_dir, ids, splits in (
        ("train2014", [1, 2], ["train", "train"]),
        ("val2014", [101, 102, 103, 104, 105, 106], ["test"] * 5 + ["val"]),
    ):
        images, anns = {}, []
        for image_id, split in zip(ids, splits):
            name = f"COCO_{split_dir}_{image_id:012d}.jpg"
            write_jpeg(root / split_dir / name, SIZE, SIZE, image_id)
            images[image_id] = name
            for k, category in enumerate(CATEGORIES):
                box = [2 + 10 * k, 3, 9, 20]
                anns.append(
                    {
                        "id": image_id * 10 + k,
                        "image_id": image_id,
                        "category_id": category["id"],
                        "bbox": box,
                        "area": 180,
                        "iscrowd": 0,
                        "segmentation": [],
                    }
                )
                crops[split] = crops.get(split, 0) + 1
            karpathy.append(
                {
                    "filepath": split_dir,
                    "filename": name,
                    "cocoid": image_id,
                    "split": split,
                    "sentences": sentences(image_id),
                }
            )
        payload = {
            "images": [{"id": i, "file_name": n, "width": SIZE, "height": SIZE} for i, n in images.items()],
            "annotations": anns,
            "categories": CATEGORIES,
        }
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split_dir}.json").write_text(json.dumps(payload))
    (root / "dataset_coco.json").write_text(json.dumps({"images": karpathy, "dataset": "coco"}))
    return crops["test"]


def write_flickr(root: Path) -> None:
    entries = []
    for k in range(3):
        name = f"{1000 + k}.jpg"
        write_jpeg(root / "flickr30k-images" / name, 40, 30, k)
        entries.append({"filename": name, "imgid": k, "split": "test", "sentences": sentences(k)})
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))


def write_imagenet(root: Path) -> Path:
    for wnid in ("n01440764", "n01443537"):
        for k in range(3):
            write_jpeg(root / "train" / wnid / f"{wnid}_{k}.JPEG", 40, 40, k)
    class_list = root / "classes.txt"
    class_list.write_text("n01440764\ttench\nn01443537\tgoldfish\n")
    return class_list


@pytest.fixture(scope="module")
def paper_data(tmp_path_factory) -> dict:
    data = tmp_path_factory.mktemp("data")
    test_crops = write_coco(data / "coco")
    write_flickr(data / "flickr30k")
    class_list = write_imagenet(data / "imagenet")
    return {"data": data, "class_list": class_list, "test_crops": test_crops}


def run_paper(tmp_path: Path, paper_data: dict, experiment: str, *overrides: str) -> Path:
    torch.set_num_threads(1)  # restored after the test (conftest.torch_threads_restored)
    cfg = compose_config(
        f"experiment={experiment}",
        "model=open_clip",
        "model.name=SynthCLIP-RN-Tiny",
        "model.pretrained=null",
        f"paths.data_dir={paper_data['data']}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"eval.probes.tiered_imagenet.class_list={paper_data['class_list']}",
        "logger=none",
        "trainer.progress=false",
        "trainer.batch_size=4",
        *overrides,
        output_dir=tmp_path,
    )
    run_dir = tmp_path / "run"
    run(cfg, run_dir)
    return run_dir


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_ding2022_mst_end_to_end(paper_data, tmp_path):
    run_dir = run_paper(tmp_path, paper_data, "ding2022_mst", "method=lwf", "tasks.sessions=2", "tasks.epochs=1")
    rows = rows_of(run_dir)
    assert [row["stage"] for row in rows] == [0, 1, 2]
    matrix = pd.read_csv(run_dir / "accuracy_matrix.csv", index_col=0)
    assert list(matrix.columns) == ["coco_s1", "coco_s2"] and len(matrix) == 3
    for key in (
        "zs/tiered_imagenet/acc",
        "ret/coco1k/i2t_r1",
        "ret/coco1k/t2i_r10",
        "ret/coco5k/i2t_r5",
        "ret/flickr30k/t2i_r1",
    ):
        assert key in rows[-1], key
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"ut_acc", "bwt", "bwt_paper", "a_acc", "delta/ret/coco5k/i2t_r1"} <= set(summary)
    a = matrix.to_numpy()
    assert summary["bwt"] == pytest.approx(a[2, 0] - a[1, 0])  # standard: divides by t = 1
    assert summary["bwt_paper"] == pytest.approx((a[2, 0] - a[1, 0]) / 2)  # the authors' /(t+1)


def test_ding2022_ost_evaluates_every_epoch(paper_data, tmp_path):
    run_dir = run_paper(tmp_path, paper_data, "ding2022_ost", "method=finetune", "tasks.epochs=2")
    rows = rows_of(run_dir)
    assert [row["stage"] for row in rows] == [0, 0.5, 1]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ut_acc"] == pytest.approx(rows[-1]["task/coco_s1/acc"])


def test_missing_coco_folder_names_the_prepare_command(tmp_path):
    cfg = compose_config(
        "experiment=ding2022_mst",
        "model=open_clip",
        "model.name=SynthCLIP-RN-Tiny",
        "model.pretrained=null",
        f"paths.data_dir={tmp_path / 'nothing'}",
        "logger=none",
        output_dir=tmp_path,
    )
    with pytest.raises(Exception) as error:
        run(cfg, tmp_path / "run")
    assert "scripts/prepare_data.py coco" in str(error.value)
