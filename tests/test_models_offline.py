"""Pretrained tags and the Hugging Face hub: cached weights load in hub offline mode (no network call),
absent weights are looked up once and refused fast, and the user's own HF_HUB_OFFLINE wins."""

from __future__ import annotations

import open_clip
import pytest
from huggingface_hub import constants

from clipcl_runner import models

TAG = ("ViT-B-32", "openai")  # open_clip serves it from timm/vit_base_patch32_clip_224.openai
REVISION = "0" * 40


def cache_with_weights(root):
    """A Hugging Face hub cache holding the tag's weights file, in the hub's on-disk layout."""
    repo = root / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"weights")
    return root


@pytest.fixture
def hub(monkeypatch):
    """The hub online as far as its module flag goes, no HF_HUB_OFFLINE from the user, and open_clip's
    builder replaced by a recorder that builds the tiny random model (nothing is downloaded)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = []
    build = open_clip.create_model_and_transforms

    def recorder(name, pretrained=None, **kwargs):
        calls.append({"pretrained": pretrained, "offline": constants.is_offline_mode()})
        return build("SynthCLIP-RN-Tiny")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", recorder)
    monkeypatch.setattr(models, "_check_activation", lambda *args: None)  # the stand-in's activation differs
    models.register_model_configs()
    return calls


def test_cached_weights_load_with_the_hub_offline_and_the_flag_is_restored(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_hub_reachable", lambda *a, **k: pytest.fail("a cached tag needs no lookup"))
    models.load_open_clip(*TAG, cache_dir=str(cache_with_weights(tmp_path)))
    assert hub == [{"pretrained": "openai", "offline": True}]
    assert constants.HF_HUB_OFFLINE is False


def test_absent_weights_on_an_unreachable_hub_are_refused_before_open_clip_runs(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_hub_reachable", lambda *a, **k: False)
    with pytest.raises(models.PretrainedWeightsMissing, match="'openai' for open_clip model 'ViT-B-32' are not cached"):
        models.load_open_clip(*TAG, cache_dir=str(tmp_path))
    assert hub == []


def test_absent_weights_on_a_reachable_hub_download_online(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_hub_reachable", lambda *a, **k: True)
    models.load_open_clip(*TAG, cache_dir=str(tmp_path))
    assert hub == [{"pretrained": "openai", "offline": False}]


def test_the_users_hf_hub_offline_choice_wins(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_hub_reachable", lambda *a, **k: pytest.fail("the user chose: no lookup"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # explicitly online: the hub may check the cached file
    models.load_open_clip(*TAG, cache_dir=str(cache_with_weights(tmp_path)))
    assert hub == [{"pretrained": "openai", "offline": False}]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # explicitly offline and absent: refused without a lookup
    with pytest.raises(models.PretrainedWeightsMissing):
        models.load_open_clip(*TAG, cache_dir=str(tmp_path / "empty"))


def test_the_lookup_is_one_short_metadata_request(monkeypatch):
    import huggingface_hub

    requests = []

    def metadata(url, timeout=None, **kwargs):
        requests.append((url, timeout))
        raise ConnectionError("no network")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", metadata)
    assert models._hub_reachable(*TAG) is False
    [(url, timeout)] = requests
    assert "timm/vit_base_patch32_clip_224.openai" in url and url.endswith("open_clip_pytorch_model.bin")
    assert timeout is not None and timeout <= 5
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url, timeout=None, **k: object())
    assert models._hub_reachable(*TAG) is True
