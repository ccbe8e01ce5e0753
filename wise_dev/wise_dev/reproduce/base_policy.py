"""The base policy: a small Qwen2.5-VL built from a config (random weights) and taught the scene
world's chains with supervised fine-tuning (TRL's ``SFTTrainer``). It stands in for
Qwen2.5-VL-7B-Instruct, the paper's starting point, which cannot be had offline.

The model classes, processor, chat template and prompt envelope are the real ones
(``Qwen2_5_VLForConditionalGeneration``, ``Qwen2_5_VLProcessor``, the Qwen2-VL template, the
prompt contract's ``build_messages`` with training's system turn), so GRPO, export and the
pipeline treat it as they would a real checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wise_dev.tiny_models import SPECIAL_TOKENS, qwen_vl_processor
from wise_training.callbacks import use_readable_console


@dataclass(frozen=True)
class PolicySize:
    """Widths of the stand-in (text decoder, vision tower)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vision_depth: int
    vision_hidden: int
    vision_heads: int

    @property
    def mrope_section(self) -> list[int]:
        # Qwen2.5-VL's split of head_dim / 2 into (time, height, width): 16/24/24 of 64 at
        # head_dim 128; the same proportions here.
        half = self.hidden // self.heads // 2
        t = half // 4
        h = (half - t) // 2
        return [t, h, half - t - h]


# ../shared/ENVIRONMENT.md "Training small Qwen2.5-VL models on these CPUs": 256/4 text, 2/128
# vision is ~5.5 M parameters, 0.075 s per SFT example and 1.4 s per GRPO step on 2 cores.
# "mid" is what the scene world's grounding probe measured (1.5 M parameters, ~0.3 s per SFT
# step of 8 short box requests on a shared core): the default preset's size, as the CPU budget
# buys it about twice the steps of "small".
SIZES: dict[str, PolicySize] = {
    "small": PolicySize(256, 4, 4, 2, 768, 2, 128, 2),
    "mid": PolicySize(128, 4, 4, 2, 384, 2, 96, 2),
    "tiny": PolicySize(64, 2, 4, 2, 128, 1, 32, 2),  # plumbing only (CI)
}


# The image processor's normalisation is the scene world's, as a pretrained ViT's is its
# pretraining images' (CLIP's mean and std): centred on the floor, so an image's features are
# what lies on it. With Qwen's CLIP constants the grey floor is one large offset shared by every
# patch; what tells images apart is a small remainder the policy never learned to read (measured,
# 1.5 M policy: the colour of a lone object stayed at chance, 8 of 40, after 150 SFT steps, and
# 37 of 40 with these constants at step 125; std 0.25 gave 24 of 40).
PIXEL_STD = 0.1


def build_policy(out: Path, tokenizer: Any, size: PolicySize, frame: int, *, seed: int = 0) -> Path:
    """Save a random-weight Qwen2.5-VL + processor whose image processor keeps ``frame`` x
    ``frame`` images whole (one token per 28 px cell), normalised to the scene world's floor."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
    )

    from wise_training.scenes import FLOOR

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    pad_id, eos_id = ids["<|endoftext|>"], ids["<|im_end|>"]
    processor = qwen_vl_processor(tokenizer, 28 * 28, frame * frame)
    processor.image_processor.image_mean = [c / 255 for c in FLOOR]
    processor.image_processor.image_std = [PIXEL_STD] * 3
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": size.hidden,
            "intermediate_size": size.intermediate,
            "num_hidden_layers": size.layers,
            "num_attention_heads": size.heads,
            "num_key_value_heads": size.kv_heads,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                # Qwen2.5-VL's own value. Measured, grounding-only SFT probe (800 steps): 6 of 40
                # val targets found against 4 at 1e4, where half the rotary pairs of a 32-wide
                # head turn fast enough to scramble a content lookup across the answer.
                "rope_theta": 1e6,
                "mrope_section": size.mrope_section,
            },
            "bos_token_id": pad_id,
            "eos_token_id": eos_id,
            "pad_token_id": pad_id,
        },
        vision_config={
            "depth": size.vision_depth,
            "hidden_size": size.vision_hidden,
            "intermediate_size": 2 * size.vision_hidden,
            "num_heads": size.vision_heads,
            "out_hidden_size": size.hidden,
            "fullatt_block_indexes": [size.vision_depth - 1],
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id, eos_token_id=eos_id, pad_token_id=pad_id, do_sample=False
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class SftSettings:
    epochs: float
    batch_size: int
    learning_rate: float
    warmup_ratio: float = 0.03
    weight_decay: float = 0.01
    seed: int = 0
    # The vision tower stays as it arrives (pretrained on the scene world's per-token labels,
    # ``vision_tower``), as many VLM recipes freeze a pretrained ViT: the language model learns
    # to read features that hold still. Measured, 1.5 M policy, "where is the <object>?", a
    # random tower (before the pretraining existed): trained along,
    # every answer was the same after 400 steps (the tower's outputs had become one shared
    # vector, cosine 0.9999 between tokens); frozen, after 600 steps 30 of 126 multi-object and
    # 21 of 40 single-object answers were right (chance 1 in 9).
    freeze_vision: bool = True
    # Batches of examples of about one length (transformers' LengthGroupedSampler recipe): a
    # grounding example is a third as long as a reasoning chain, and in a mixed batch it is padded
    # to the longest chain. Measured, default preset: 0.5 s a step instead of 0.8; per step it
    # teaches somewhat less (a batch of short examples weighs as much as one of chains), so the
    # preset spends the time saved on more epochs (README, "Reproduction at CPU scale").
    group_by_length: bool = True


def sft(
    base: Path,
    examples: Sequence[dict[str, Any]],
    images: Sequence[Any],
    out: Path,
    settings: SftSettings,
    *,
    console: bool = True,
) -> Path:
    """Supervised fine-tuning with TRL's ``SFTTrainer`` on conversational prompt-completion
    examples (loss on the completion only), each with its image; saves model + processor."""
    import datasets
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
    from trl import SFTConfig, SFTTrainer

    processor = AutoProcessor.from_pretrained(base)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32)
    if settings.freeze_vision:
        model.model.visual.requires_grad_(False)
    rows = [
        {"prompt": e["prompt"], "completion": e["completion"], "images": [image]}
        for e, image in zip(examples, images, strict=True)
    ]
    steps = math.ceil(settings.epochs * len(rows) / settings.batch_size)
    dataset = datasets.Dataset.from_list(rows)
    if settings.group_by_length:
        # The trainer reads the rows in this order (sequential sampling, every epoch's rows
        # listed; an index mapping, so each image is stored once): TRL drops a length column
        # before transformers' own grouping could read it.
        lengths = [_text_length(e) for e in examples]
        dataset = dataset.select(length_grouped_order(lengths, settings, steps))
    args = SFTConfig(
        output_dir=str(out / "trainer"),
        max_steps=steps,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=settings.warmup_ratio,
        weight_decay=settings.weight_decay,
        max_grad_norm=1.0,
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        report_to="none",
        seed=settings.seed,
        data_seed=settings.seed,
        max_length=None,
        completion_only_loss=True,
        dataloader_num_workers=0,
        disable_tqdm=not console,
        logging_steps=25,
        train_sampling_strategy="sequential" if settings.group_by_length else "random",
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
    )
    use_readable_console(trainer)
    trainer.train()
    final = out / "policy"
    trainer.save_model(str(final))
    processor.save_pretrained(str(final))
    return final


def _text_length(example: dict[str, Any]) -> int:
    """Characters of an example's text (prompt and completion): the sort key of length grouping,
    proportional enough to its tokens."""
    turns = [*example["prompt"], *example["completion"]]
    return sum(
        len(part.get("text", "")) if isinstance(part, dict) else len(part)
        for turn in turns
        for part in (turn["content"] if isinstance(turn["content"], list) else [turn["content"]])
    )


def length_grouped_order(lengths: Sequence[int], settings: SftSettings, steps: int) -> list[int]:
    """Row indices for ``steps`` batches: each epoch a fresh permutation, cut into megabatches of
    50 batches whose rows are sorted by length and cut into batches, so a batch holds rows of
    about one length. transformers' ``get_length_grouped_indices`` (its ``LengthGroupedSampler``)
    does the same per epoch but leaves each megabatch's batches in long-to-short order; here the
    batches are shuffled too, so short and long batches alternate through training."""
    rng = np.random.default_rng(settings.seed)
    size, mega = settings.batch_size, 50 * settings.batch_size
    order: list[int] = []
    while len(order) < steps * size:
        permutation = rng.permutation(len(lengths))
        batches = []
        for start in range(0, len(permutation), mega):
            chunk = sorted(permutation[start : start + mega], key=lambda i: -lengths[i])
            batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
        for b in rng.permutation(len(batches)):
            order += [int(i) for i in batches[b]]
    return order[: steps * size]


def load_images(paths: Sequence[Path]) -> list[Any]:
    from PIL import Image

    return [Image.open(p).convert("RGB") for p in paths]


def greedy_box_accuracy(
    policy: Path,
    records: Sequence[dict[str, Any]],
    root: Path,
    mode: str,
    *,
    batch_size: int = 16,
    system: str | None = None,
    max_new_tokens: int = 320,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Greedy answers of the product's transformers backend on ``records``: the share whose box
    IoU > 0.5, the share that parse, and mean #Tok (a quick check; evaluation proper is the
    evaluator's)."""
    from wise_perception.core.answer import ParsedAnswer, parse_completion
    from wise_perception.core.geometry import box_iou
    from wise_perception.core.prompts import build_instruction, spec_for
    from wise_perception.core.tokens import reasoning_tokens
    from wise_perception.policy import load_policy

    backend = load_policy(
        str(policy), device="cpu", max_new_tokens=max_new_tokens, system_prompt=system
    )
    spec = spec_for(mode)
    stop = (f"</{spec.order[-1]}>",)
    hits, parsed, tokens = 0, 0, []
    try:
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            images = [np.asarray(img) for img in load_images([root / r["image"] for r in chunk])]
            prompts = [build_instruction(r["instruction"], spec) for r in chunk]
            outputs = backend.generate(images, prompts, stop=stop)
            for record, output in zip(chunk, outputs, strict=True):
                answer = parse_completion(output.text)
                tokens.append(reasoning_tokens(output.text, backend.tokenizer))
                if isinstance(answer, ParsedAnswer):
                    parsed += 1
                    hits += box_iou(answer.objects[0].box, record["box"]) > 0.5
            if progress is not None:
                progress(min(start + batch_size, len(records)))
    finally:
        backend.close()
    n = max(len(records), 1)
    return {"accuracy": hits / n, "parsed": parsed / n, "think_tokens": float(np.mean(tokens))}
