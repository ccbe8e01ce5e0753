"""Preprocessing on the model's device equals the processors' CPU path (tiny real models, CPU;
on a GPU the same code runs there)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wise_perception.core.answer import ObjectPrompt
from wise_perception.policy.transformers.backend import TransformersPolicy
from wise_perception.policy.transformers.inputs import PolicyInputs
from wise_perception.segmenter.sam2_transformers import Sam2TransformersSegmenter

COMMANDS = ("the red cup", "the small thing on the left of the robot arm, next to the bottle")


def _image(width: int, height: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def policy(tiny_policy_dir) -> TransformersPolicy:
    return TransformersPolicy.from_pretrained(tiny_policy_dir, device="cpu", dtype="float32")


@pytest.mark.parametrize(
    "sizes",
    [[(840, 840)], [(320, 240), (200, 300)], [(64, 48), (840, 840), (28, 28)]],
    ids=["policy-frame", "two-sizes", "three-sizes"],
)
def test_policy_inputs_equal_the_processors(policy, sizes) -> None:
    """Token ids, masks and multimodal types exactly, pixels within float tolerance, batched
    with left padding; the second call reuses the kept token ids and gives the same."""
    texts = [policy.prompt_text(COMMANDS[i % 2]) for i in range(len(sizes))]
    images = [_image(w, h, i) for i, (w, h) in enumerate(sizes)]
    want = policy.processor(text=texts, images=images, padding=True, return_tensors="pt")
    build = PolicyInputs(policy.processor, "cpu")
    assert build.on_device  # the torchvision backend: the same code runs on a GPU
    for _ in range(2):
        got = build(images, texts)
        assert set(got) == set(want)
        for key in ("input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw"):
            assert torch.equal(got[key], want[key]), key
        torch.testing.assert_close(got["pixel_values"], want["pixel_values"])
    assert build.cached_prompts() == len(
        set(zip(texts, map(tuple, want["image_grid_thw"].tolist()), strict=True))
    )


def test_policy_generates_from_its_own_inputs(policy) -> None:
    """generate builds its inputs with PolicyInputs (token ids kept per prompt)."""
    frame = _image(840, 840, 3)
    before = policy.inputs.cached_prompts()
    outputs = policy.generate([frame, frame], ["the red cup", "the blue cup"])
    assert len(outputs) == 2 and policy.inputs.cached_prompts() == before + 2
    policy.generate([frame], ["the red cup"])
    assert policy.inputs.cached_prompts() == before + 2


@pytest.fixture(scope="module")
def segmenter(tiny_sam2_dir) -> Sam2TransformersSegmenter:
    return Sam2TransformersSegmenter.from_pretrained(tiny_sam2_dir, device="cpu", dtype="float32")


@pytest.mark.parametrize("size", [(640, 480), (97, 301), (1, 1)])
def test_sam2_on_device_equals_the_processors_cpu_path(segmenter, size) -> None:
    """Encoding (processor on the device) and mask upsampling (on the device, only the boolean
    mask comes back) give the CPU path's embeddings and masks."""
    width, height = size
    image = _image(width, height, width)
    inputs = segmenter.processor(
        images=image, input_data_format="channels_last", return_tensors="pt"
    )
    with torch.inference_mode():
        want = segmenter.model.get_image_embeddings(inputs["pixel_values"])
    encoding = segmenter.encode(image)
    torch.testing.assert_close(encoding.state["embeddings"], want)
    box = (width * 0.2, height * 0.2, width * 0.7, height * 0.8)
    objects = [
        ObjectPrompt(box=box, points=((width * 0.4, height * 0.5), (width * 0.5, height * 0.6)))
    ]
    (got,) = segmenter.decode(encoding, objects)
    assert got.mask.shape == (height, width) and got.mask.dtype == bool
    # The reference: the processor's own post-processing on the CPU.
    prompt = segmenter.processor(
        original_sizes=inputs["original_sizes"],
        input_boxes=[[list(box)]],
        input_points=[[[list(p) for p in objects[0].points]]],
        input_labels=[[[1, 1]]],
        return_tensors="pt",
    )
    with torch.inference_mode():
        out = segmenter.model(
            image_embeddings=want,
            input_boxes=prompt["input_boxes"],
            input_points=prompt["input_points"],
            input_labels=prompt["input_labels"],
            multimask_output=True,
        )
    best = int(out.iou_scores[0, 0].argmax())
    low = out.pred_masks[0, 0, best][None, None, None]
    (masks,) = segmenter.processor.post_process_masks(low, inputs["original_sizes"])
    assert np.array_equal(got.mask, masks[0, 0].numpy())
    assert got.score == pytest.approx(float(out.iou_scores[0, 0, best]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA streams and graphs need a GPU")
def test_sam2_on_its_own_cuda_stream_matches_the_cpu(tiny_sam2_dir, segmenter) -> None:
    """On CUDA, encode and decode run on the segmenter's own stream (compiled encoder) and
    give the CPU's embeddings within float tolerance."""
    cuda = Sam2TransformersSegmenter.from_pretrained(
        tiny_sam2_dir, device="cuda", dtype="float32", compile=True
    )
    assert cuda._stream.stream is not None
    assert cuda._stream.stream != torch.cuda.current_stream()
    image = _image(640, 480, 5)
    for _ in range(2):  # the second call runs the compiled encoder warm
        got = cuda.encode(image).state["embeddings"]
    want = segmenter.encode(image).state["embeddings"]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.cpu(), w, rtol=1e-3, atol=1e-3)
    box = (100.0, 100.0, 400.0, 300.0)
    (mask,) = cuda.decode(cuda.encode(image), [ObjectPrompt(box=box, points=())])
    assert mask.mask.shape == (480, 640)
