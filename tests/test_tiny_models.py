"""The tiny offline checkpoints load through the plain Hugging Face loaders and behave like real ones."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Sam2Model,
    Sam2Processor,
)

from wise_dev.tiny_models import (
    DEMO_IMAGE_SIZE,
    DEMO_RED_SQUARE_XYXY,
    REASONING_TOKENS,
    SPECIAL_TOKENS,
    TinyCheckpoints,
    build_tiny_checkpoints,
    build_tiny_policy,
    build_tiny_sam2,
    is_complete,
    main,
)

COMPLETION = '<think> a </think><answer>{"bbox": [1,2,3,4]}</answer>'
QUESTION = "Please find 'the red square' with bbox and points."


@pytest.fixture(scope="module")
def processor(tiny_policy_dir: Path) -> Qwen2_5_VLProcessor:
    return AutoProcessor.from_pretrained(tiny_policy_dir)


@pytest.fixture(scope="module")
def policy(tiny_policy_dir: Path) -> Qwen2_5_VLForConditionalGeneration:
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(
        tiny_policy_dir, dtype=torch.float32
    ).eval()


@pytest.fixture(scope="module")
def sam2(tiny_sam2_dir: Path) -> tuple[Sam2Model, Sam2Processor]:
    model = Sam2Model.from_pretrained(tiny_sam2_dir).eval()
    return model, Sam2Processor.from_pretrained(tiny_sam2_dir)


@pytest.fixture(scope="module")
def demo_image(tiny_checkpoints: TinyCheckpoints) -> Image.Image:
    return Image.open(tiny_checkpoints.demo_image).convert("RGB")


def _user_turn(image: object | None = None) -> list[dict]:
    image_part = {"type": "image"} if image is None else {"type": "image", "image": image}
    return [{"role": "user", "content": [image_part, {"type": "text", "text": QUESTION}]}]


# ----------------------------------------------------------------------------- policy


def test_policy_loads_back_through_plain_hf_loaders(processor, policy, tiny_policy_dir) -> None:
    # AutoProcessor must give the full processor, not a bare tokenizer.
    assert isinstance(processor, Qwen2_5_VLProcessor)
    assert isinstance(processor.tokenizer, Qwen2Tokenizer)
    assert isinstance(processor.image_processor, Qwen2VLImageProcessor)
    assert isinstance(AutoTokenizer.from_pretrained(tiny_policy_dir), Qwen2Tokenizer)

    tok, cfg = processor.tokenizer, policy.config
    assert (
        cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>") == processor.image_token_id
    )
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert cfg.text_config.eos_token_id == tok.eos_token_id
    assert cfg.text_config.pad_token_id == tok.pad_token_id
    assert policy.generation_config.eos_token_id == tok.eos_token_id
    assert policy.generation_config.pad_token_id == tok.pad_token_id
    assert cfg.text_config.vocab_size == len(tok)
    assert cfg.text_config.rope_parameters["mrope_section"] == [2, 3, 3]
    assert cfg.vision_config.fullatt_block_indexes == [1]
    assert sum(p.numel() for p in policy.parameters()) < 1_000_000
    assert (tiny_policy_dir / "model.safetensors").is_file()
    assert is_complete(tiny_policy_dir, "policy")


def test_tokenizer_round_trips_completion_text(processor) -> None:
    tok = processor.tokenizer
    assert 1000 <= len(tok) <= 2000
    ids = tok.encode(COMPLETION, add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == COMPLETION
    for tag in REASONING_TOKENS:  # single, non-special tokens
        tag_ids = tok.encode(tag, add_special_tokens=False)
        assert len(tag_ids) == 1 and tag_ids[0] not in tok.all_special_ids
    for token in SPECIAL_TOKENS:
        assert tok.convert_tokens_to_ids(token) in tok.all_special_ids
    # Special tokens are dropped by skip_special_tokens, the reasoning tags are kept.
    wrapped = tok.encode(COMPLETION + "<|im_end|>", add_special_tokens=False)
    assert tok.decode(wrapped, skip_special_tokens=True) == COMPLETION


def test_chat_template_renders_image_placeholder(processor, tiny_policy_dir) -> None:
    text = processor.apply_chat_template(_user_turn(), add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>" + QUESTION + "<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}, *_user_turn()]
    text = processor.apply_chat_template(with_system, add_generation_prompt=False, tokenize=False)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert "helpful assistant" not in text and not text.endswith("assistant\n")
    # The tokenizer alone (what TRL may use) renders the same template.
    tokenizer = AutoTokenizer.from_pretrained(tiny_policy_dir)
    kwargs = {"add_generation_prompt": True, "tokenize": False}
    assert tokenizer.apply_chat_template(_user_turn(), **kwargs) == (
        processor.apply_chat_template(_user_turn(), **kwargs)
    )


def test_image_processor_keeps_vision_tokens_few(processor) -> None:
    frame = np.zeros((840, 840, 3), dtype=np.uint8)
    text = processor.apply_chat_template(_user_turn(), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[frame], return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]]  # 840x840 -> 112x112
    n_image_tokens = int((inputs["input_ids"] == processor.image_token_id).sum())
    assert n_image_tokens == 16


def test_generate_for_image_and_text(processor, policy, demo_image) -> None:
    text = processor.apply_chat_template(_user_turn(), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[demo_image], return_tensors="pt")
    start = time.perf_counter()
    with torch.no_grad():
        out = policy.generate(**inputs, max_new_tokens=16, min_new_tokens=4, do_sample=False)
    elapsed = time.perf_counter() - start
    new_tokens = out[:, inputs["input_ids"].shape[1] :]
    assert 4 <= new_tokens.shape[1] <= 16
    assert elapsed < 5.0, f"tiny generate took {elapsed:.2f} s"
    assert isinstance(processor.batch_decode(new_tokens, skip_special_tokens=True)[0], str)
    # Greedy decoding of a fixed random model is deterministic.
    with torch.no_grad():
        again = policy.generate(**inputs, max_new_tokens=16, min_new_tokens=4, do_sample=False)
    assert torch.equal(out, again)


def test_apply_chat_template_tokenizes_images_in_one_call(processor, policy, demo_image) -> None:
    inputs = processor.apply_chat_template(
        _user_turn(demo_image),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    assert {"input_ids", "pixel_values", "image_grid_thw"} <= set(inputs.keys())
    with torch.no_grad():
        out = policy.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4


# ----------------------------------------------------------------------------- SAM2


def _sam2_inputs(processor: Sam2Processor, image: Image.Image) -> dict:
    x0, y0, x1, y1 = DEMO_RED_SQUARE_XYXY
    return processor(
        images=image,
        input_boxes=[[[x0, y0, x1, y1]]],
        input_points=[[[[x0 + 20, y0 + 20], [x1 - 20, y1 - 20]]]],
        input_labels=[[[1, 1]]],
        return_tensors="pt",
    )


def test_sam2_box_and_points_forward_gives_mask_of_image_size(
    sam2, demo_image, tiny_sam2_dir
) -> None:
    model, processor = sam2
    assert sum(p.numel() for p in model.parameters()) < 500_000
    assert is_complete(tiny_sam2_dir, "sam2")
    inputs = _sam2_inputs(processor, demo_image)
    assert inputs["pixel_values"].shape == (1, 3, 256, 256)
    assert inputs["input_boxes"].shape == (1, 1, 4)
    assert inputs["input_points"].shape == (1, 1, 2, 2)
    assert inputs["input_labels"].shape == (1, 1, 2)
    with torch.no_grad():
        out = model(**inputs, multimask_output=False)
    assert out.pred_masks.shape == (1, 1, 1, 64, 64)
    assert out.iou_scores.shape == (1, 1, 1)
    masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"])
    width, height = DEMO_IMAGE_SIZE
    assert masks[0].shape == (1, 1, height, width)
    assert masks[0].dtype == torch.bool


def test_sam2_image_embeddings_can_be_reused(sam2, demo_image) -> None:
    model, processor = sam2
    inputs = _sam2_inputs(processor, demo_image)
    with torch.no_grad():
        full = model(**inputs, multimask_output=False)
        embeddings = model.get_image_embeddings(inputs["pixel_values"])
        reused = model(
            image_embeddings=embeddings,
            input_points=inputs["input_points"],
            input_labels=inputs["input_labels"],
            input_boxes=inputs["input_boxes"],
            multimask_output=False,
        )
        box_only = processor(
            original_sizes=inputs["original_sizes"],
            input_boxes=[[[0, 0, 50, 50]]],
            return_tensors="pt",
        )
        other = model(
            image_embeddings=embeddings, input_boxes=box_only["input_boxes"], multimask_output=True
        )
    assert torch.allclose(full.pred_masks, reused.pred_masks, atol=1e-5)
    assert other.pred_masks.shape == (1, 1, 3, 64, 64)


# ----------------------------------------------------------------------------- building


def test_demo_image(demo_image) -> None:
    assert demo_image.size == DEMO_IMAGE_SIZE
    pixels = np.asarray(demo_image)
    x0, y0, x1, y1 = DEMO_RED_SQUARE_XYXY
    assert tuple(pixels[(y0 + y1) // 2, (x0 + x1) // 2]) == (255, 0, 0)
    assert tuple(pixels[0, 0]) == (128, 128, 128)
    assert int((pixels == [255, 0, 0]).all(axis=-1).sum()) == (x1 - x0) * (y1 - y0)


def test_build_is_idempotent(tiny_checkpoints: TinyCheckpoints, capsys) -> None:
    weights = tiny_checkpoints.policy / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = build_tiny_checkpoints(tiny_checkpoints.root)
    assert again == tiny_checkpoints
    assert weights.stat().st_mtime_ns == before  # reused, not rebuilt
    assert main(["--out", str(tiny_checkpoints.root)]) == 0
    printed = capsys.readouterr().out
    assert str(tiny_checkpoints.policy) in printed and str(tiny_checkpoints.sam2) in printed


def test_build_is_deterministic(tiny_checkpoints: TinyCheckpoints, tmp_path: Path) -> None:
    rebuilt = build_tiny_policy(tmp_path / "policy", seed=0)
    for path in tiny_checkpoints.policy.iterdir():
        if path.is_file():
            assert (rebuilt / path.name).read_bytes() == path.read_bytes(), path.name
    same = build_tiny_sam2(tmp_path / "sam2", seed=0)
    weights = "model.safetensors"
    assert (same / weights).read_bytes() == (tiny_checkpoints.sam2 / weights).read_bytes()
    other = build_tiny_sam2(tmp_path / "sam2_seed1", seed=1)
    assert (other / weights).read_bytes() != (same / weights).read_bytes()


def test_build_refuses_foreign_folders_and_redoes_unfinished_ones(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not a model")
    with pytest.raises(FileExistsError):
        build_tiny_sam2(foreign)
    assert (foreign / "keep.txt").read_text() == "not a model"

    unfinished = tmp_path / "sam2"
    unfinished.mkdir()
    (unfinished / "wise_tiny_model.json").write_text(
        '{"kind": "sam2", "seed": 0, "state": "building"}'
    )
    (unfinished / "config.json").write_text("{}")
    assert not is_complete(unfinished, "sam2")
    build_tiny_sam2(unfinished)
    assert is_complete(unfinished, "sam2") and not is_complete(unfinished, "sam2", seed=1)
    assert not is_complete(unfinished, "policy")
    assert (
        Sam2Model.from_pretrained(unfinished).config.vision_config.backbone_config.hidden_size == 16
    )


def test_demo_completion_answers_the_demo_images_red_square() -> None:
    from wise_dev.teach import DEMO_COMPLETION
    from wise_perception.core.answer import ParsedAnswer, parse_completion
    from wise_perception.core.geometry import ResizeProtocol

    parsed = parse_completion(DEMO_COMPLETION)
    assert isinstance(parsed, ParsedAnswer)
    width, height = DEMO_IMAGE_SIZE
    obj = ResizeProtocol().object_to_image(parsed.objects[0], width, height)
    assert obj.box == tuple(float(v) for v in DEMO_RED_SQUARE_XYXY)
    x0, y0, x1, y1 = obj.box
    assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in obj.points)


def test_teach_cli_reports_a_missing_base(tmp_path, capsys) -> None:
    from wise_dev.teach import main

    assert main(["--base", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 1
    assert "teach:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
