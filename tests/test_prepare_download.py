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
