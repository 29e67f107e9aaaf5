"""scripts/prepare_data.py --download on a machine without internet: one line naming the dataset, no traceback."""

from __future__ import annotations

import importlib.util
import urllib.error

from conftest import REPO


def load_script():
    spec = importlib.util.spec_from_file_location("prepare_data", REPO / "scripts" / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_offline_download_fails_with_one_line(tmp_path, monkeypatch, capsys):
    prepare = load_script()

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr("torchvision.datasets.DTD", unreachable)
    assert prepare.main(["dtd", "--root", str(tmp_path), "--download"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("DOWNLOAD FAILED for dtd: [Errno 111] Connection refused (is this machine offline?")
    assert "Traceback" not in err and "by hand" in err


def write_image(path, seed: int = 0) -> None:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), seed, dtype=np.uint8)).save(path)


def test_tiered_imagenet_checks_the_folder_the_runs_read(tmp_path, capsys):
    """--root is the data folder, as for imagenet: the check reads <root>/imagenet/train (what eval=paper's
    probe reads with paths.data_dir=<root>) and prints the override the runs need to read it."""
    prepare = load_script()
    classes = tmp_path / "classes.txt"
    classes.write_text("n00000001\tone\n")
    data = tmp_path / "data"
    assert prepare.main(["tiered_imagenet", "--root", str(data), "--class-list", str(classes)]) == 1
    out = capsys.readouterr().out
    assert f"{data}/imagenet/train" in out and "image-net.org" in out
    write_image(data / "imagenet" / "train" / "n00000001" / "a.JPEG")
    assert prepare.main(["tiered_imagenet", "--root", str(data), "--class-list", str(classes)]) == 0
    out = capsys.readouterr().out
    assert f"ok: all 1 class folders in {data}/imagenet/train" in out
    assert f"run with: paths.data_dir={data.resolve()}" in out
    # a --root that is a class folder itself is checked as given, with the probe's own override
    assert (
        prepare.main(["tiered_imagenet", "--root", str(data / "imagenet" / "train"), "--class-list", str(classes)]) == 0
    )
    out = capsys.readouterr().out
    assert f"run with: eval.probes.tiered_imagenet.root={(data / 'imagenet' / 'train').resolve()}" in out


def test_imagenet_cc_checks_both_parts_and_says_where_to_get_each(tmp_path, capsys):
    prepare = load_script()
    data = tmp_path / "data"
    assert prepare.main(["imagenet_cc", "--root", str(data)]) == 1
    out = capsys.readouterr().out
    assert f"{data}/imagenet/train (ImageNet training images" in out and "ILSVRC2012_img_train.tar" in out
    assert f"{data}/conceptual_captions/Validation_GCC-1.1.0-Validation.tsv" in out
    assert "ai.google.com/research/ConceptualCaptions" in out
    write_image(data / "imagenet" / "train" / "n00000001" / "a.JPEG")
    assert prepare.main(["imagenet_cc", "--root", str(data)]) == 1
    out = capsys.readouterr().out
    assert "ILSVRC2012_img_train.tar" not in out and "1 images in 1 class folders" in out
    tsv = data / "conceptual_captions" / "Validation_GCC-1.1.0-Validation.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("a dog on a beach\thttp://x/1.jpg\na red car\thttp://x/2.jpg\n")
    assert prepare.main(["imagenet_cc", "--root", str(data), "--quick"]) == 0
    assert f"ok: 2 captions in {tsv}" in capsys.readouterr().out


def test_tiered_imagenet_accepts_the_imagenet_folder_with_its_override(tmp_path, capsys):
    """`--root data/imagenet` (README's old example) checks data/imagenet/train, what the runs read with
    paths.data_dir=data."""
    prepare = load_script()
    classes = tmp_path / "classes.txt"
    classes.write_text("n00000001\tone\n")
    write_image(tmp_path / "data" / "imagenet" / "train" / "n00000001" / "a.JPEG")
    assert (
        prepare.main(["tiered_imagenet", "--root", str(tmp_path / "data" / "imagenet"), "--class-list", str(classes)])
        == 0
    )
    out = capsys.readouterr().out
    assert f"ok: all 1 class folders in {tmp_path}/data/imagenet/train" in out
    assert f"run with: paths.data_dir={(tmp_path / 'data').resolve()}" in out
