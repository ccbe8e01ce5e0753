"""The run folder's model card (``README.md``): base model, config name and reward terms.

TRL's generated card names the base model only when it is a hub id and otherwise prints
"fine-tuned version of [None](https://huggingface.co/None)"; this card always names the model
the run started from (a hub link for a hub id, the folder for a local path), the WISE config,
the prompt mode and every reward term with its weight and paper source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wise_perception.core.prompts import spec_for

from .config import TrainConfig
from .rewards import RewardConfig

CARD_NAME = "README.md"
PAPER = "Efficient Reasoning via Thought Compression for Language Segmentation (WISE)"

# What each TRL reward function measures, and where it comes from.
TERM_DESCRIPTIONS: dict[str, str] = {
    "tag_format_reward": "R_format: the spans appear in the trained order (Eq. 3)",
    "json_format_reward": "R_format: the answer is valid JSON with a box and two points (Eq. 3)",
    "iou_reward": "R_acc: box IoU with the ground truth (Eq. 3)",
    "box_l1_reward": "R_acc: 1 when the box's L1 distance is under the threshold (Eq. 3)",
    "points_reward": "R_acc: 1 when both points are inside the box and near the ground truth (Eq. 3)",
    "distill_reward": "R_distill = S_sim x S_concise, gated by 1[correct] (Eq. 4-7)",
    "length_reward": "L1-Exact / L1-Max length term (§4 Baselines)",
    "think_tokens": "monitor: tokens in <think>",
    "d_think_tokens": "monitor: tokens in <d_think>",
    "distill_earned": "monitor: share of completions that earned R_distill",
}


def _is_local(path: str) -> bool:
    return Path(path).exists() or path.startswith((".", "/", "~"))


def model_card_text(
    config: TrainConfig,
    reward_config: RewardConfig,
    reward_names: list[str],
    reward_weights: list[float],
    *,
    global_step: int | None = None,
) -> str:
    base = config.model.path
    local = _is_local(base)
    spec = spec_for(config.prompt.mode, brevity=config.prompt.brevity)
    front = ["---", "library_name: transformers", "pipeline_tag: image-text-to-text"]
    if not local:
        front.append(f"base_model: {base}")
    front += [
        "tags:",
        *(f"- {t}" for t in ("wise", "grpo", "trl", "reasoning-segmentation", config.name)),
        "---",
    ]
    base_text = (
        f"the local model folder `{base}`" if local else f"[{base}](https://huggingface.co/{base})"
    )
    order = " -> ".join(f"`<{name}>`" for name in spec.order)
    lines = [
        *front,
        "",
        f"# WISE policy, training config `{config.name}`",
        "",
        f"A GRPO fine-tune (TRL `GRPOTrainer`) of {base_text} with the WISE recipe of the paper "
        f"*{PAPER}* (§3.2). The policy writes {order}; the frozen SAM2 segmenter is not trained.",
        "",
        f"- Base model: `{base}`",
        f"- Training config: `{config.name}` (resolved values in `wise_training_config.json`)",
        f"- Prompt mode: `{config.prompt.mode}`",
        f"- Training data: `{config.data.train}` ({config.data.format})",
        f"- Sentence model for S_sim (Eq. 6): `{config.model.sentence_model}`",
    ]
    if global_step is not None:
        lines.append(f"- Optimizer steps: {global_step}")
    switches = (
        f"iou_mode={reward_config.iou_mode}, distill={reward_config.distill}, "
        f"indicator={reward_config.indicator}, use_similarity={reward_config.use_similarity}, "
        f"use_conciseness={reward_config.use_conciseness}, "
        f"use_indicator={reward_config.use_indicator}, length_reward={reward_config.length_reward}"
    )
    lines += [
        "",
        "## Reward terms",
        "",
        "GRPO's reward is the weighted sum of these TRL reward functions (Eq. 4: "
        "R = R_format + R_acc + 1[correct] R_distill); weight-0 terms are logged only.",
        "",
        "| reward function | weight | what |",
        "| --- | --- | --- |",
        *(
            f"| `{name}` | {weight:g} | {TERM_DESCRIPTIONS.get(name, '')} |"
            for name, weight in zip(reward_names, reward_weights, strict=True)
        ),
        "",
        f"Reward switches: {switches}.",
        "",
        "## Use",
        "",
        "```bash",
        "python -m wise_training.export --checkpoint <output_dir>/final --out <export> --mode wise_s",
        'wise-segment image.jpg "the mug on the left" --model <export>',
        "```",
        "",
    ]
    return "\n".join(lines)


def write_model_card(folder: str | Path, text: str) -> Path:
    path = Path(folder) / CARD_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def reward_names_of(trainer: Any) -> list[str]:
    return [getattr(f, "__name__", str(f)) for f in trainer.reward_funcs]
