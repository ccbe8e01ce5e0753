"""The checkpoint manifest: round trip and clear failures."""

import json

import pytest

from wise_perception.core.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    config_hash,
    read_manifest,
    write_manifest,
)


def test_round_trip(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    cfg = {"lr": 1e-6, "beta": 5e-3}
    m = Manifest(
        prompt_mode="wise_s",
        files=("model.safetensors",),
        training_config=cfg,
        training_config_sha256=config_hash(cfg),
    )
    write_manifest(tmp_path, m)
    assert read_manifest(tmp_path) == m
    assert config_hash({"beta": 5e-3, "lr": 1e-6}) == m.training_config_sha256


def write_raw(tmp_path, data):
    (tmp_path / MANIFEST_NAME).write_text(data if isinstance(data, str) else json.dumps(data))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ({"prompt_mode": "wise_s"}, "format_version"),
        ({"format_version": FORMAT_VERSION + 1}, "newer"),
        ({"format_version": 1, "prompt_mode": "telepathy"}, "malformed"),
        ({"format_version": 1, "surprise": 1}, "unknown keys"),
        ({"format_version": 1, "policy_frame": 100}, "multiple of 28"),
        ({"format_version": 1, "files": ["model.safetensors"]}, "missing"),
    ],
)
def test_bad_manifests_fail_clearly(tmp_path, data, message):
    write_raw(tmp_path, data)
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path)
