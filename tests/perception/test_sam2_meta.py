"""The Meta ``sam2`` segmenter backend, on CPU with the real package and a small random model.

The model is built from ``data/sam2.1_hiera_tiny_random.yaml`` (SAM 2.1's classes and options,
small widths), saved as Meta saves its releases (``{"model": state_dict}`` in a ``.pt``) and
loaded back through ``load_segmenter`` like a real checkpoint.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from wise_perception.backend_info import BackendInfo
from wise_perception.core.answer import ObjectPrompt
from wise_perception.pipeline import PipelineConfig, WisePipeline
from wise_perception.policy.base import PolicyBackend, PolicyOutput
from wise_perception.result import Status
from wise_perception.segmenter import load_segmenter
from wise_perception.segmenter.sam2_meta import (
    CONFIGS,
    SAM2_MISSING,
    Sam2CheckpointError,
    Sam2MetaSegmenter,
    _hydra_search,
    config_for_checkpoint,
)

pytestmark = pytest.mark.sam2

TINY_CONFIG = Path(__file__).parent / "data" / "sam2.1_hiera_tiny_random.yaml"
OBJECTS = [
    ObjectPrompt((40.0, 30.0, 200.0, 150.0), ((80.0, 60.0), (150.0, 120.0))),
    ObjectPrompt((10.0, 10.0, 60.0, 50.0), ((30.0, 30.0),)),  # another point count
    ObjectPrompt((150.0, 100.0, 310.0, 230.0), ((200.0, 150.0), (280.0, 200.0))),
]


def _image(width: int, height: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random SAM 2.1 model from the tiny config, saved in Meta's checkpoint format."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    with _hydra_search(str(TINY_CONFIG)) as name:
        model = build_sam2(name, ckpt_path=None, device="cpu")
    path = tmp_path_factory.mktemp("sam2_meta") / "tiny_random.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def segmenter(tiny_pt: Path) -> Sam2MetaSegmenter:
    loaded = load_segmenter(tiny_pt, device="cpu", config=str(TINY_CONFIG))
    assert isinstance(loaded, Sam2MetaSegmenter)  # a .pt file selects this backend
    return loaded


def test_masks_are_meta_predictors_best_of_three(segmenter, tiny_pt) -> None:
    """Ours equals SAM2ImagePredictor on a model loaded by Meta's own build_sam2(ckpt_path=...)."""
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    image = _image(320, 240, 1)
    segmented = segmenter.decode(segmenter.encode(image), OBJECTS)
    assert len(segmented) == len(OBJECTS)
    with _hydra_search(str(TINY_CONFIG)) as name:
        reference = SAM2ImagePredictor(build_sam2(name, ckpt_path=str(tiny_pt), device="cpu"))
    reference.set_image(image)
    for obj, seg in zip(OBJECTS, segmented, strict=True):
        masks, scores, _ = reference.predict(
            point_coords=np.array(obj.points),
            point_labels=np.ones(len(obj.points)),
            box=np.array(obj.box),
            multimask_output=True,
        )
        assert masks.shape == (3, 240, 320)
        best = int(scores.argmax())
        assert seg.mask.dtype == bool and seg.mask.shape == (240, 320)
        assert seg.score == pytest.approx(float(scores[best]), abs=1e-5)
        # Ours sends same-point-count objects through the decoder as one batch; still equal.
        assert np.array_equal(seg.mask, masks[best])
    assert segmenter.decode(segmenter.encode(image), []) == []


def test_an_older_encoding_still_decodes_its_own_frame(segmenter) -> None:
    """The pipeline caches encodings per frame and may decode one after newer frames."""
    first, second = _image(320, 240, 2), _image(200, 100, 3)
    enc_first = segmenter.encode(first)
    before = segmenter.decode(enc_first, OBJECTS[:1])[0]
    enc_second = segmenter.encode(second)
    after = segmenter.decode(enc_first, OBJECTS[:1])[0]
    assert np.array_equal(before.mask, after.mask) and before.score == after.score
    assert segmenter.decode(enc_second, OBJECTS[:1])[0].mask.shape == (100, 200)
    assert (enc_first.width, enc_first.height) == (320, 240)


def test_bad_inputs_are_refused(segmenter) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        segmenter.encode(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        segmenter.encode(np.zeros((10, 10, 3), dtype=np.float32))
    encoding = segmenter.encode(_image(32, 24, 4))
    with pytest.raises(ValueError, match="finite"):
        segmenter.decode(encoding, [ObjectPrompt((0.0, 0.0, float("nan"), 5.0))])


def test_pipeline_auto_selects_the_meta_backend(tiny_pt) -> None:
    class OneAnswer(PolicyBackend):
        tokenizer = None

        def info(self) -> BackendInfo:
            return BackendInfo("one answer", "test")

        def generate(self, images, instructions, *, spec=None, stop=()):
            text = (
                "<think> the red square </think><answer>"
                '{"bbox": [100,200,400,500], "points_1": [200,300], "points_2": [300,400]}</answer>'
            )
            return [PolicyOutput(text, 7, 0.001, 0.002) for _ in images]

    segmenter = load_segmenter(tiny_pt, backend="auto", device="cpu", config=str(TINY_CONFIG))
    with WisePipeline(OneAnswer(), segmenter, PipelineConfig()) as pipeline:
        assert pipeline.describe()["segmenter"] == {
            "name": str(tiny_pt),
            "backend": "sam2",
            "device": "cpu",
            "dtype": "float32",
        }
        result = pipeline.segment(_image(320, 240, 5), "the red square")
    assert result.status is Status.OK, result.error
    assert result.mask is not None and result.mask.shape == (240, 320)
    assert len(result.objects) == 1


# ---------------------------------------------------------------------- configs


def test_config_from_meta_release_names(tmp_path) -> None:
    import sam2

    package = Path(sam2.__file__).parent
    assert all((package / name).is_file() for name in CONFIGS.values())  # they exist in 1.1.0
    for size, letter in (("tiny", "t"), ("small", "s"), ("base_plus", "b+"), ("large", "l")):
        expected = f"configs/sam2.1/sam2.1_hiera_{letter}.yaml"
        assert config_for_checkpoint(f"/ckpt/sam2.1_hiera_{size}.pt") == expected
    assert config_for_checkpoint("robot-sam2.1-hiera-base-plus.pt").endswith("_b+.yaml")
    assert config_for_checkpoint("sam2_hiera_large.pt") == "configs/sam2/sam2_hiera_l.yaml"
    # An explicit config wins over the name: a release name, a package config or a file.
    assert config_for_checkpoint("sam2.1_hiera_tiny.pt", "sam2.1_hiera_large").endswith("_l.yaml")
    assert config_for_checkpoint("x.pt", "configs/sam2.1/sam2.1_hiera_s.yaml").endswith("_s.yaml")
    assert config_for_checkpoint("x.pt", TINY_CONFIG) == str(TINY_CONFIG.resolve())
    with pytest.raises(ValueError, match="does not say which SAM2 model"):
        config_for_checkpoint("finetuned.pt")
    with pytest.raises(ValueError, match="unknown SAM2 config"):
        config_for_checkpoint("finetuned.pt", "hiera_huge")
    with pytest.raises(ValueError, match="unknown SAM2 config"):
        config_for_checkpoint("finetuned.pt", tmp_path / "missing.yaml")


def test_unnamed_checkpoint_without_config_is_a_clear_error(tiny_pt) -> None:
    with pytest.raises(ValueError, match="pass the config explicitly"):
        load_segmenter(tiny_pt, device="cpu")


def test_checkpoint_of_another_size_is_refused(tiny_pt, tmp_path) -> None:
    misnamed = tmp_path / "sam2.1_hiera_tiny.pt"  # says tiny, holds the tiny random model
    misnamed.write_bytes(tiny_pt.read_bytes())
    with pytest.raises(Sam2CheckpointError, match=r"does not fit config .*sam2.1_hiera_t\.yaml"):
        load_segmenter(misnamed, device="cpu")


# ---------------------------------------------------------------------- bad checkpoints


class _Payload:
    """Would create ``marker`` when unpickled: full unpickling runs code like this."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_are_loaded_weights_only(tiny_pt, tmp_path) -> None:
    marker = tmp_path / "code_ran"
    hostile = tmp_path / "hostile.pt"
    state = torch.load(tiny_pt, weights_only=True)
    torch.save({"model": state["model"], "extra": _Payload(marker)}, hostile)
    with pytest.raises(Sam2CheckpointError, match="weights-only"):
        load_segmenter(hostile, device="cpu", config=str(TINY_CONFIG))
    assert not marker.exists()


def test_bad_checkpoints_are_clear(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_segmenter(tmp_path / "sam2.1_hiera_large.pt", device="cpu")
    garbage = tmp_path / "sam2.1_hiera_tiny.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(Sam2CheckpointError, match=r"unreadable as a torch checkpoint.*again"):
        load_segmenter(garbage, device="cpu")
    flat = tmp_path / "flat.pt"  # a bare state dict, not Meta's {"model": ...}
    torch.save({"weight": torch.zeros(2)}, flat)
    with pytest.raises(Sam2CheckpointError, match=r'\{"model": state_dict\}'):
        load_segmenter(flat, device="cpu", config=str(TINY_CONFIG))
    listed = tmp_path / "listed.pt"  # "model" is there but is no state dict
    torch.save({"model": [1, 2]}, listed)
    with pytest.raises(Sam2CheckpointError, match="expected Meta's SAM2 format"):
        load_segmenter(listed, device="cpu", config=str(TINY_CONFIG))
    pickled = tmp_path / "plain.pt"  # a plain pickle, not torch's format
    pickled.write_bytes(pickle.dumps({"model": {}}, protocol=2))
    with pytest.raises(Sam2CheckpointError, match="not a readable torch checkpoint"):
        load_segmenter(pickled, device="cpu", config=str(TINY_CONFIG))


def test_a_truncated_checkpoint_is_named_with_what_to_do(tiny_pt, tmp_path) -> None:
    """An interrupted download: torch's zip cut short. The error names the file and says to
    fetch it again (not torch's bare "failed finding central directory")."""
    cut = tmp_path / "sam2.1_hiera_tiny.pt"
    data = Path(tiny_pt).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(Sam2CheckpointError) as info:
        load_segmenter(cut, device="cpu", config=str(TINY_CONFIG))
    message = str(info.value)
    assert str(cut) in message and "truncated or corrupted" in message and "again" in message


def test_missing_package_says_how_to_install(monkeypatch, tiny_pt) -> None:
    import builtins

    real_import = builtins.__import__

    def no_sam2(name, *args, **kwargs):
        if name == "sam2" or name.startswith("sam2."):
            raise ImportError("No module named 'sam2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sam2)
    with pytest.raises(ImportError, match="--no-build-isolation") as info:
        load_segmenter(tiny_pt, device="cpu", config=str(TINY_CONFIG))
    assert str(info.value) == SAM2_MISSING
