"""Tiny, randomly initialised stand-ins for the WISE policy (Qwen2.5-VL) and segmenter (SAM2).

No model hub can be reached in CI or on the development machines, so tests cannot download
``Qwen/Qwen2.5-VL-7B-Instruct`` or ``facebook/sam2.1-hiera-*``. This module builds the SAME
model classes from small configs with random weights, seeded, and saves them as ordinary
Hugging Face folders (``save_pretrained``: ``config.json``, ``model.safetensors``, processor
files). Production code then loads them through exactly the loaders it uses for real
checkpoints (``AutoProcessor`` / ``Qwen2_5_VLForConditionalGeneration`` / ``Sam2Model`` /
``Sam2Processor`` ``.from_pretrained``). The weights are random: outputs are meaningless
text and masks, but every shape, token id, template and call path is the real one.

Build everything (idempotent, reuses complete folders)::

    python -m wise_dev.tiny_models --out /tmp/wise_tiny

Policy folder (``build_tiny_policy``)
-------------------------------------
* ``Qwen2_5_VLForConditionalGeneration``: text hidden 64, 2 layers, 4 heads, 2 kv heads,
  ``rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}``
  (the section must sum to head_dim / 2 = 8); vision depth 2, hidden 32, 2 heads,
  ``out_hidden_size`` 64, ``fullatt_block_indexes=[1]``. About 0.2 M parameters, < 1 MB.
  The vLLM variant (``build_tiny_policy(..., hidden_size=128, mrope_section=(4, 6, 6))``,
  ``TinyCheckpoints.policy_hd32``): text head_dim 32, the smallest vLLM's CPU attention
  kernel accepts (it refuses head_dim 16); same tokenizer, processor and vision tower.
* Tokenizer: a byte-level BPE trained here on a small built-in English corpus (Qwen2's split
  regex, ``ByteLevel`` pre-tokenizer and decoder), wrapped as ``Qwen2Tokenizer``. Its ids do
  NOT match the real Qwen vocabulary (the seven Qwen special tokens are ids 0..6, see
  ``SPECIAL_TOKENS``); the model config's ``image_token_id``/``video_token_id``/
  ``vision_start_token_id``/``vision_end_token_id`` and bos/eos/pad ids are taken from this
  tokenizer, so never hard-code Qwen's ids (151645, 151655, ...), read them from the
  tokenizer or config. ``pad = <|endoftext|>``, ``eos = <|im_end|>``.
  ``<think> </think> <answer> </answer> <d_think> </d_think>`` are added as NON-special
  tokens (TRL decodes completions with ``skip_special_tokens=True``, which would drop
  special ones), so ``decode(encode(t), skip_special_tokens=True) == t`` for completions.
* Chat template (``chat_template.jinja``, also set on the tokenizer): the Qwen2-VL format::

      <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
      <|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>TEXT<|im_end|>\\n
      <|im_start|>assistant\\n

  A default system turn is inserted when the first message is not a system message.
* Image processor: ``Qwen2VLImageProcessor`` with patch 14, merge 2, temporal patch 2 and
  ``size={"shortest_edge": 56*56, "longest_edge": 112*112}`` (pixels), so an 840x840 frame
  is resized to 112x112 = 8x8 patches = 16 vision tokens and CPU tests stay fast. The real
  WISE policy keeps 840x840 frames (its processor's max_pixels admits them): tests must not
  assume the tiny processor's resolution. The 320x240 demo image becomes 84x112 (12 tokens).
* ``generation_config.json``: greedy (``do_sample=False``), ``max_new_tokens=64``,
  ``eos_token_id`` = id of ``<|im_end|>``, ``pad_token_id``/``bos_token_id`` = id of
  ``<|endoftext|>``.

Image + text generation that works (transformers 5.23)::

    processor = AutoProcessor.from_pretrained(policy_dir)        # Qwen2_5_VLProcessor
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(policy_dir, dtype=torch.float32)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[pil_or_hwc_uint8], return_tensors="pt")
    # keys: input_ids, attention_mask, mm_token_type_ids, pixel_values, image_grid_thw
    out = model.generate(**inputs, max_new_tokens=32, do_sample=False)
    completion = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                        skip_special_tokens=True)[0]

  (``processor.apply_chat_template(messages_with {"type": "image", "image": img},
  add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")`` also
  works in one call.) For batched generation set ``processor.tokenizer.padding_side = "left"``
  (the saved tokenizer keeps the library default, "right", as the real checkpoints do).

SAM2 folder (``build_tiny_sam2``)
---------------------------------
* ``Sam2Model``: image size 256, Hiera stages ``[1, 1, 2, 1]``, hidden 16 (stage dims
  16/32/64/128), FPN/prompt-encoder/mask-decoder hidden 32: ~0.35 M parameters; a forward
  takes tens of ms on CPU. ``Sam2Processor`` with ``Sam2ImageProcessor(size=256x256)``.
  The real SAM2.1 uses 1024x1024 inputs; read the size from the processor, not from here.

Call signatures that work in transformers 5.23 (coordinates in ORIGINAL image pixels, x/y;
the processor rescales them to the model's input size)::

    processor = Sam2Processor.from_pretrained(sam2_dir)
    model = Sam2Model.from_pretrained(sam2_dir).eval()
    inputs = processor(
        images=rgb,                                   # PIL or HxWx3 uint8
        input_boxes=[[[x0, y0, x1, y1]]],             # [image][box][4]
        input_points=[[[[px1, py1], [px2, py2]]]],    # [image][object][point][2]
        input_labels=[[[1, 1]]],                      # [image][object][point]; 1 = foreground
        return_tensors="pt",
    )
    # tensors: pixel_values (1,3,256,256), original_sizes (1,2) = (H, W),
    #          input_boxes (1,1,4), input_points (1,1,2,2), input_labels (1,1,2)
    with torch.no_grad():
        out = model(**inputs, multimask_output=False)
    # out.pred_masks: (1, n_objects, n_masks, 64, 64) logits (low-res = 256 / 4);
    # out.iou_scores: (1, n_objects, n_masks). multimask_output=True gives n_masks = 3.
    masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"])
    # -> list, one per image, of bool tensors (n_objects, n_masks, H, W) at the ORIGINAL size
    #    (binarize=True, mask_threshold=0.0 by default; binarize=False gives resized logits).

    # Reusing the image encoder for several prompts:
    with torch.no_grad():
        emb = model.get_image_embeddings(inputs["pixel_values"])  # list of 3 feature maps
        prompt = processor(original_sizes=inputs["original_sizes"],
                           input_boxes=[[[x0, y0, x1, y1]]], return_tensors="pt")
        out = model(image_embeddings=emb, input_boxes=prompt["input_boxes"],
                    multimask_output=False)
    # equals the full forward with the same prompt (checked in tests).

Boxes and points prompt the same object when the number of boxes equals the object
dimension of the points (one box <-> one list of points).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import Qwen2Tokenizer

__all__ = [
    "DEMO_IMAGE_NAME",
    "DEMO_IMAGE_SIZE",
    "DEMO_RED_SQUARE_XYXY",
    "QWEN2_VL_CHAT_TEMPLATE",
    "REASONING_TOKENS",
    "SPECIAL_TOKENS",
    "TINY_MAX_PIXELS",
    "TINY_MIN_PIXELS",
    "TinyCheckpoints",
    "build_demo_image",
    "build_tiny_checkpoints",
    "build_tiny_policy",
    "build_tiny_sam2",
    "build_tiny_sam2_video",
    "build_tiny_tokenizer",
    "is_complete",
    "main",
    "sam2_processor",
    "share_positional_encoding",
    "tiny_sam2_video",
    "tiny_sam2_video_config",
]

# The Qwen2/Qwen2.5-VL special tokens, in Qwen's order (here they get ids 0..6).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Span tags of WISE completions: added as NON-special tokens (kept by skip_special_tokens=True).
REASONING_TOKENS: tuple[str, ...] = (
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<d_think>",
    "</d_think>",
)

# Qwen2's pre-tokenizer split regex (contractions, letters, single digits, punctuation, spaces).
QWEN_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The Qwen2-VL chat format, written for this project: string or list content; list items of
# type image/video become vision placeholders, text items their text; default system prompt.
QWEN2_VL_CHAT_TEMPLATE = r"""{%- set default_system = 'You are a helpful assistant.' -%}
{%- for message in messages -%}
{%- if loop.first and message['role'] != 'system' -%}
{{- '<|im_start|>system\n' + default_system + '<|im_end|>\n' -}}
{%- endif -%}
{{- '<|im_start|>' + message['role'] + '\n' -}}
{%- if message['content'] is string -%}
{{- message['content'] -}}
{%- else -%}
{%- for part in message['content'] -%}
{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}
{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
{%- elif part['type'] == 'video' or 'video' in part -%}
{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
{%- elif 'text' in part -%}
{{- part['text'] -}}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- endif -%}"""

# Tiny image budget (pixels): 840x840 -> 112x112 (16 vision tokens). The real model keeps 840x840.
TINY_MIN_PIXELS = 56 * 56
TINY_MAX_PIXELS = 112 * 112

_TOKENIZER_VOCAB_SIZE = 1536  # upper bound for the BPE trainer; the corpus yields ~1000-1500
_SAM2_IMAGE_SIZE = 256

DEMO_IMAGE_NAME = "demo.png"
DEMO_IMAGE_SIZE = (320, 240)  # (width, height)
DEMO_RED_SQUARE_XYXY = (120, 80, 200, 160)  # x0, y0, x1, y1 (exclusive), pure red (255, 0, 0)
_DEMO_BACKGROUND = (128, 128, 128)

_MARKER = "wise_tiny_model.json"  # written last: its presence marks a complete folder
_FORMAT_VERSION = 1

# A small built-in English corpus for the tokenizer: the words of the WISE prompts and
# completions, robot-scene vocabulary and JSON answers (digits are split one by one).
_CORPUS_SENTENCES: tuple[str, ...] = (
    "Please find 'the red cup on the left' with bbox and points.",
    "Compare the difference between objects and find the most closely matched one.",
    "Compare the difference between object(s) and find the most closely matched object(s).",
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags.",
    "Output the streamlined thinking process in <think> </think>, the detailed thinking process "
    "in <d_think> </d_think> and final answer in <answer> </answer> tags.",
    "Output the one bbox and points of two largest inscribed circles inside the interested "
    "object in JSON format.",
    "Output the bbox(es) and point(s) inside the interested object(s) in JSON format.",
    "i.e., <think> streamlined thinking process here (one sentence) </think>",
    "<d_think> detailed thinking process here </d_think>",
    "within 10 words, the shorter the better, one word is best",
    "You are a helpful assistant.",
    "The user asks for the red cup, which is next to the blue bottle on the table.",
    "The target is the mug closest to the robot gripper, on the right side of the image.",
    "The object is a small green box behind the laptop and in front of the plant.",
    "There are two chairs; the one near the window is the matched object.",
    "I should segment the person holding the umbrella in the middle of the street.",
    "The left apple is larger than the right one, so the left apple is the answer.",
    "Pick up the yellow banana and place it in the white bowl on the kitchen counter.",
    "Find the door handle, the light switch, the drawer and the shelf in the room.",
    "The dog is sitting under the wooden table while the cat sleeps on the sofa.",
    "Segment the tool that can be used to cut paper: the scissors near the pencil.",
    "Which object can hold hot coffee? The ceramic mug, not the glass or the plate.",
    "The car in the background is parked behind the bicycle and the traffic sign.",
    "Points are inside the object, far from its boundary, at the centers of the circles.",
    "The bounding box covers the whole object from the top left to the bottom right corner.",
    "Look at the image carefully, describe the scene, then reason about the question.",
    "First, locate every candidate; second, compare color, shape, size and position.",
    "The answer is correct when the predicted mask overlaps the ground truth mask.",
    "The robot arm moves to the bottle, opens its gripper, grasps it and lifts it up.",
    "Reasoning segmentation needs world knowledge, spatial relations and common sense.",
    "A gray background with a red square in the center of the picture.",
    "black brown orange purple pink silver golden striped round square tall short empty full",
    "above below beside between inside outside upper lower front back near far first second third",
    "keyboard mouse monitor phone remote book bag backpack bench clock vase toothbrush spoon "
    "fork knife sandwich pizza cake donut orange carrot broccoli tomato bread bottle cup",
    "the a an of to and in on at for with by from is are was be this that it its which who",
    "Segmentation masks are predicted by the segment anything model from a box and two points.",
    "The policy reads the instruction, reasons briefly, and answers with coordinates.",
    "Concise reasoning keeps the rationale short while the answer stays accurate.",
    "The detailed explanation summarizes why the chosen region matches the description.",
    "Something you can sit on, something you can drink from, something that gives light.",
    "The refrigerator, the microwave, the oven, the sink and the toaster are kitchen appliances.",
    "An elephant, a giraffe, a zebra, a horse, a sheep and a cow stand in the field.",
    "The skateboard, the surfboard, the snowboard and the skis lean against the wall.",
    "Airplanes fly above the clouds; boats and ships float on the water near the harbor.",
    "The person wearing glasses reads a newspaper while drinking orange juice at breakfast.",
    "Grasp the handle of the frying pan carefully because the metal may be very hot.",
    "The teddy bear sits on the bed next to the pillow, the blanket and the alarm clock.",
    "Open the cabinet, take out the blue towel, and hang it on the hook by the mirror.",
    "Move forward slowly, turn left at the corridor, and stop in front of the elevator.",
    "Identify the fruit that is yellow and curved; ignore the round red fruit beside it.",
    "The smallest object on the desk is an eraser; the largest one is the computer screen.",
    "Count the bottles: one is transparent, one is dark green, and one is made of plastic.",
    "Because the question mentions warmth, the blanket rather than the towel is correct.",
    "If several objects match, prefer the one that is most visible and least occluded.",
    "Pixels, regions, contours, edges, textures, shadows and reflections change with lighting.",
    "Evaluation reports gIoU, cIoU, accuracy, latency, throughput and the number of tokens.",
    "Reinforcement learning with group relative policy optimization rewards correct formats.",
    "Rewards: format reward, bbox IoU reward, points L1 reward, and a length penalty.",
    "Training uses images, questions, ground truth boxes and points, and sampled completions.",
    "The camera publishes color images; the node subscribes, segments and publishes masks.",
    "Robots need fast, reliable perception that explains its decisions in plain language.",
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday morning afternoon evening night",
    "zero one two three four five six seven eight nine ten hundred thousand half quarter",
    "north south east west up down top bottom corner edge middle center side diagonal",
)
_CORPUS_JSON: tuple[str, ...] = (
    '{"bbox": [10,100,200,210], "points_1": [30,110], "points_2": [35,180]}',
    '[{"bbox_2d": [10,100,200,210], "point_2d": [30,110]}, '
    '{"bbox_2d": [225,296,706,786], "point_2d": [302,410]}]',
    '{"bbox": [120, 80, 200, 160], "points_1": [140, 100], "points_2": [180, 140]}',
    '{"bbox": [0, 0, 839, 839], "points_1": [419, 419], "points_2": [420, 420]}',
)


def _corpus() -> Iterator[str]:
    """The tokenizer's training text (a few passes so frequent pairs merge first)."""
    for _ in range(3):
        yield from _CORPUS_SENTENCES
        yield from _CORPUS_JSON


@dataclass(frozen=True)
class TinyCheckpoints:
    """Paths of a built set of tiny checkpoints (all under ``root``)."""

    root: Path
    policy: Path  # Hugging Face folder: Qwen2_5_VLForConditionalGeneration + Qwen2_5_VLProcessor
    sam2: Path  # Hugging Face folder: Sam2Model + Sam2Processor
    demo_image: Path  # 320x240 RGB PNG, red square DEMO_RED_SQUARE_XYXY on gray
    # The text head_dim 32 policy variant for vLLM (build_tiny_checkpoints(vllm_policy=True)).
    policy_hd32: Path | None = None


# --------------------------------------------------------------------------- helpers


def _marker_info(kind: str, seed: int) -> dict[str, Any]:
    import transformers

    return {
        "kind": kind,
        "seed": seed,
        "format": _FORMAT_VERSION,
        "transformers": transformers.__version__,
        "note": "random-weight test stand-in built by wise_dev.tiny_models",
    }


def _write_marker(folder: Path, kind: str, seed: int) -> None:
    (folder / _MARKER).write_text(json.dumps(_marker_info(kind, seed), indent=2) + "\n")


def is_complete(folder: Path, kind: str, seed: int = 0) -> bool:
    """True when ``folder`` holds a finished tiny ``kind`` ("policy"/"sam2") build for ``seed``."""
    try:
        info = json.loads((Path(folder) / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return info == _marker_info(kind, seed)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch for model init without disturbing the caller's global RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Exclusive inter-process lock on ``folder`` (pytest-xdist workers sharing a cache)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".wise_tiny.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fresh_dir(out_dir: Path, kind: str, seed: int) -> Path:
    """(Re)create ``out_dir`` for a build; refuse to wipe a non-empty folder that is not ours."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        if any(out_dir.iterdir()) and not (out_dir / _MARKER).is_file():
            raise FileExistsError(f"{out_dir} is not empty and is not a tiny-model folder")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    # Provisional marker: identifies the folder as ours (rebuildable) but not complete yet.
    (out_dir / _MARKER).write_text(json.dumps({"kind": kind, "seed": seed, "state": "building"}))
    return out_dir


# --------------------------------------------------------------------------- policy


def qwen2_tokenizer(
    vocab: dict[str, int], merges: Sequence[tuple[str, str]], special_tokens: Sequence[str]
) -> Qwen2Tokenizer:
    """A ``Qwen2Tokenizer`` over a byte-level BPE, set up as Qwen's: no unk/bos,
    ``<|im_end|>`` ends a turn, ``<|endoftext|>`` pads (``special_tokens[0]``), the others are
    special, and the Qwen2-VL chat template."""
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer(
        vocab=vocab,
        merges=list(merges),
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token=special_tokens[0],
        extra_special_tokens=list(special_tokens[1:]),
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )


def train_qwen2_tokenizer(corpus: Iterable[str], vocab_size: int) -> Qwen2Tokenizer:
    """A Qwen2-style byte-level BPE ``Qwen2Tokenizer`` trained offline on ``corpus``: Qwen's split
    regex (every digit its own token), special tokens with ids 0..6 in ``SPECIAL_TOKENS`` order,
    ``REASONING_TOKENS`` after the BPE vocabulary as non-special added tokens, the chat template
    ``QWEN2_VL_CHAT_TEMPLATE``. Deterministic (the BPE trainer is; no seed involved)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = state["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in state["merges"]]

    tokenizer = qwen2_tokenizer(vocab, merges, SPECIAL_TOKENS)
    tokenizer.add_tokens(list(REASONING_TOKENS), special_tokens=False)
    for token in SPECIAL_TOKENS:  # ids 0..6, as trained
        if tokenizer.convert_tokens_to_ids(token) != SPECIAL_TOKENS.index(token):
            raise RuntimeError(f"trained tokenizer: unexpected id for {token}")
    return tokenizer


def build_tiny_tokenizer(extra_corpus: Sequence[str] = ()) -> Qwen2Tokenizer:
    """The tiny models' tokenizer: :func:`train_qwen2_tokenizer` on the built-in corpus."""
    return train_qwen2_tokenizer([*_corpus(), *extra_corpus], _TOKENIZER_VOCAB_SIZE)


def qwen_vl_processor(tokenizer: Any, min_pixels: int, max_pixels: int) -> Any:
    """A ``Qwen2_5_VLProcessor`` around ``tokenizer`` (Qwen2.5-VL's 14 px patches, 2x2 merge, the
    Qwen2-VL chat template) that keeps images between ``min_pixels`` and ``max_pixels``."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    vision_kw: dict[str, Any] = {"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, **vision_kw),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size, **vision_kw),
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )


def build_tiny_policy(
    out_dir: Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    mrope_section: tuple[int, int, int] = (2, 3, 3),
) -> Path:
    """Save a tiny random ``Qwen2_5_VLForConditionalGeneration`` + ``Qwen2_5_VLProcessor``.

    ``hidden_size`` is the text width (4 heads, so head_dim = hidden_size / 4, and
    ``mrope_section`` must sum to head_dim / 2); 128 with ``(4, 6, 6)`` is the vLLM variant.
    ``out_dir`` is (re)created. Loads back with ``AutoProcessor.from_pretrained(out_dir)`` and
    ``Qwen2_5_VLForConditionalGeneration.from_pretrained(out_dir)``. Returns ``out_dir``.
    """
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
    )

    kind = _policy_kind(hidden_size)
    if sum(mrope_section) * 2 * 4 != hidden_size:
        raise ValueError(f"mrope_section {mrope_section} must sum to head_dim / 2")
    out_dir = _fresh_dir(out_dir, kind, seed)
    tokenizer = build_tiny_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    pad_id, eos_id = ids["<|endoftext|>"], ids["<|im_end|>"]

    processor = qwen_vl_processor(tokenizer, TINY_MIN_PIXELS, TINY_MAX_PIXELS)

    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 8192,
            # mrope_section sums to head_dim / 2 (= (64 / 4) / 2 = 8 by default).
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": list(mrope_section),
            },
            "bos_token_id": pad_id,
            "eos_token_id": eos_id,
            "pad_token_id": pad_id,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": hidden_size,
            "fullatt_block_indexes": [1],
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    with _seeded(seed):
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        do_sample=False,
        max_new_tokens=64,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    _write_marker(out_dir, kind, seed)
    return out_dir


def _policy_kind(hidden_size: int) -> str:
    return "policy" if hidden_size == 64 else f"policy_h{hidden_size}"


# --------------------------------------------------------------------------- SAM2


def _tiny_vision_config(image_size: int, fpn_hidden: int) -> dict[str, Any]:
    """The tiny SAM2 image encoder: Hiera hidden 16, doubled per stage, 5 blocks."""
    stage_dims = [16, 32, 64, 128]
    return {
        "backbone_config": {
            "model_type": "sam2_hiera_det_model",
            "hidden_size": stage_dims[0],
            "num_attention_heads": 1,
            "image_size": [image_size, image_size],
            "blocks_per_stage": [1, 1, 2, 1],
            "embed_dim_per_stage": stage_dims,
            "num_attention_heads_per_stage": [1, 1, 2, 2],
            "window_size_per_stage": [8, 4, 8, 4],
            "global_attention_blocks": [3],
            "window_positional_embedding_background_size": [4, 4],
        },
        "backbone_channel_list": stage_dims[::-1],
        # Stride-4 patch embedding then /2 per stage: 64, 32, 16 for a 256 input.
        "backbone_feature_sizes": [[image_size // s] * 2 for s in (4, 8, 16)],
        "fpn_hidden_size": fpn_hidden,
    }


def build_tiny_sam2(out_dir: Path, *, seed: int = 0, image_size: int = _SAM2_IMAGE_SIZE) -> Path:
    """Save a tiny random ``Sam2Model`` + ``Sam2Processor`` (``image_size`` square input, 256 by
    default). Returns ``out_dir``."""
    from transformers import Sam2Config, Sam2Model

    out_dir = _fresh_dir(out_dir, "sam2", seed)
    hidden = 32  # FPN / prompt encoder / mask decoder width
    config = Sam2Config(
        vision_config=_tiny_vision_config(image_size, hidden),
        prompt_encoder_config={
            "hidden_size": hidden,
            "image_size": image_size,
            "patch_size": 16,
        },
        mask_decoder_config={
            "hidden_size": hidden,
            "mlp_dim": 64,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": hidden,
        },
    )
    with _seeded(seed):
        model = Sam2Model(config)
    model.save_pretrained(out_dir)
    sam2_processor(image_size).save_pretrained(out_dir)
    _write_marker(out_dir, "sam2", seed)
    return out_dir


def tiny_sam2_video_config(
    *,
    image_size: int = _SAM2_IMAGE_SIZE,
    num_maskmem: int = 3,
    max_object_pointers: int = 4,
    multimask_output_for_tracking: bool = True,
) -> Any:
    """A small ``Sam2VideoConfig``: the image model of ``build_tiny_sam2`` at ``image_size``
    (a multiple of 64) with FPN width 128, plus one memory-attention layer. Small windows (3
    memories, 4 object pointers; SAM2.1 uses 7 and 16) so short streams reach them.

    Constraints of transformers 5.23's Sam2VideoModel: memory features are 64 wide (its memory
    cross-attention takes 64-wide keys), and the FPN width must be a multiple of 64 greater
    than 64 (object pointers are split into 64-wide tokens; at exactly 64 they are not
    reshaped and the memory concatenation fails).
    """
    from transformers import Sam2VideoConfig

    if image_size % 64:
        raise ValueError(f"image_size must be a multiple of 64, got {image_size}")
    hidden = 128
    top = image_size // 16  # stride-16 feature map: memory and attention tokens per side
    return Sam2VideoConfig(
        vision_config={
            "model_type": "sam2_vision_model",
            **_tiny_vision_config(image_size, hidden),
        },
        prompt_encoder_config={"hidden_size": hidden, "image_size": image_size, "patch_size": 16},
        mask_decoder_config={
            "hidden_size": hidden,
            "mlp_dim": 128,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 64,
        },
        image_size=image_size,
        num_maskmem=num_maskmem,
        max_object_pointers_in_encoder=max_object_pointers,
        multimask_output_for_tracking=multimask_output_for_tracking,
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=256,
        memory_attention_rope_feat_sizes=[top, top],
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=256,
        memory_fuser_num_layers=1,
    )


def sam2_processor(image_size: int = _SAM2_IMAGE_SIZE, *, video: bool = False) -> Any:
    """The processor of the tiny SAM2 folders (inputs resized to image_size squared):
    ``Sam2Processor``, or with ``video`` a ``Sam2VideoProcessor`` (as the facebook/sam2.1-hiera-*
    folders hold; ``Sam2Processor.from_pretrained`` reads its image side too)."""
    from transformers import (
        Sam2ImageProcessor,
        Sam2Processor,
        Sam2VideoProcessor,
        Sam2VideoVideoProcessor,
    )

    size = {"height": image_size, "width": image_size}
    if video:
        return Sam2VideoProcessor(
            image_processor=Sam2ImageProcessor(size=size),
            video_processor=Sam2VideoVideoProcessor(size=size),
        )
    return Sam2Processor(image_processor=Sam2ImageProcessor(size=size))


def from_scratch(model: Any) -> Any:
    """PyTorch's default initialisation for every linear and convolution layer (returns
    ``model``). transformers initialises them from N(0, 0.02), meant for loading trained
    weights over: in a model this small the attention logits then start so flat that their
    query and key projections get gradients 100-1000 times smaller (measured), and a model
    trained from there learnt to ignore its prompts (identical masks for any box or point).
    Meta trains SAM2 from PyTorch's defaults."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            module.reset_parameters()
    return model


def share_positional_encoding(model: Any) -> Any:
    """Give the prompt encoder the image's random positional encoding (returns ``model``).

    SAM encodes prompt coordinates and image positions with one random Fourier basis (Meta's
    ``PositionEmbeddingRandom``, shared); transformers' ``Sam2Model``/``Sam2VideoModel`` hold
    two copies as buffers (``shared_image_embedding`` and ``prompt_encoder.shared_embedding``),
    equal in converted checkpoints but drawn separately at random init, and buffers are not
    trained: a model built from a config would never learn where its prompts point."""
    import torch

    with torch.no_grad():
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(
            model.shared_image_embedding.positional_embedding
        )
    return model


def build_tiny_sam2_video(out_dir: Path, *, seed: int = 0, **config: Any) -> Path:
    """Save a tiny random ``Sam2VideoModel`` (``tiny_sam2_video_config(**config)``) with its
    ``Sam2VideoProcessor``: one folder that loads as the image segmenter (``Sam2Model`` ignores the
    memory weights, as with the facebook/sam2.1-hiera-* folders) and as the tracker."""
    from transformers import Sam2VideoModel

    out_dir = _fresh_dir(out_dir, "sam2_video", seed)
    video_config = tiny_sam2_video_config(**config)
    with _seeded(seed):
        model = share_positional_encoding(Sam2VideoModel(video_config))
    model.save_pretrained(out_dir)
    sam2_processor(video_config.image_size, video=True).save_pretrained(out_dir)
    _write_marker(out_dir, "sam2_video", seed)
    return out_dir


def tiny_sam2_video(root: Path, *, seed: int = 0) -> Path:
    """``root/sam2_video`` (``build_tiny_sam2_video`` defaults), built once, reused after."""
    folder = Path(root) / "sam2_video"
    with _locked(Path(root)):
        if not is_complete(folder, "sam2_video", seed):
            build_tiny_sam2_video(folder, seed=seed)
    return folder


# --------------------------------------------------------------------------- demo image + all


def build_demo_image(path: Path) -> Path:
    """Write the 320x240 RGB demo PNG: a pure red square (``DEMO_RED_SQUARE_XYXY``) on gray."""
    import numpy as np
    from PIL import Image

    width, height = DEMO_IMAGE_SIZE
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = _DEMO_BACKGROUND
    x0, y0, x1, y1 = DEMO_RED_SQUARE_XYXY
    pixels[y0:y1, x0:x1] = (255, 0, 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(pixels, mode="RGB").save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def build_tiny_checkpoints(
    out_dir: Path, *, seed: int = 0, vllm_policy: bool = False
) -> TinyCheckpoints:
    """Build (or reuse) ``out_dir/policy``, ``out_dir/sam2`` and ``out_dir/demo.png``
    (and ``out_dir/policy_hd32``, the vLLM variant, with ``vllm_policy=True``).

    Idempotent: a folder whose completion marker matches (kind, seed, format, transformers
    version) is reused, anything else is rebuilt. Safe for concurrent callers (file lock).
    """
    root = Path(out_dir)
    ckpts = TinyCheckpoints(
        root=root,
        policy=root / "policy",
        sam2=root / "sam2",
        demo_image=root / DEMO_IMAGE_NAME,
        policy_hd32=root / "policy_hd32" if vllm_policy else None,
    )
    with _locked(root):
        if ckpts.policy_hd32 and not is_complete(ckpts.policy_hd32, _policy_kind(128), seed):
            build_tiny_policy(
                ckpts.policy_hd32, seed=seed, hidden_size=128, mrope_section=(4, 6, 6)
            )
        if not is_complete(ckpts.policy, "policy", seed):
            build_tiny_policy(ckpts.policy, seed=seed)
        if not is_complete(ckpts.sam2, "sam2", seed):
            build_tiny_sam2(ckpts.sam2, seed=seed)
        if not ckpts.demo_image.is_file():
            build_demo_image(ckpts.demo_image)
    return ckpts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wise_dev.tiny_models",
        description="Build tiny random-weight Qwen2.5-VL and SAM2 test checkpoints (offline).",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    ckpts = build_tiny_checkpoints(args.out, seed=args.seed)
    print(f"policy: {ckpts.policy}")
    print(f"sam2: {ckpts.sam2}")
    print(f"demo_image: {ckpts.demo_image}")
    print(f"took {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
