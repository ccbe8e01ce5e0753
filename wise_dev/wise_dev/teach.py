"""Teach a tiny random policy one answer, so success paths can be tested end to end.

The tiny Qwen2.5-VL of :mod:`.tiny_models` has random weights and writes junk. Tests of the
pipeline's success path (parsing, coordinate mapping, SAM2 prompting, #Tok) need a policy that
really answers. :func:`teach_policy` fine-tunes the tiny model with a plain torch loop (Adam,
teacher forcing on the completion tokens only, CPU, a few seconds) until, for ANY image and
ANY instruction rendered by the prompt contract, greedy decoding emits exactly ``completion``
followed by the end-of-turn token, alone or in a left-padded batch (as the backend generates).
Training sees fresh random images (several sizes, as the pipeline's resize makes them all
policy-frame squares anyway) and instructions of every inference mode and both answer schemas,
so the model learns to ignore its input. The result is verified by greedy generation on
held-out images and questions, alone and in left-padded pairs with a much longer prompt, and
teaching goes on until every greedy step wins by at least ``MIN_MARGIN`` logits: a policy that
only just memorised its answer flips a token on another CPU or thread count, one taught to a
wide margin does not. It raises if that cannot be reached.

Tests use taught policies kept as small fixtures in the repository (``tests/fixtures/policies``,
made with ``--fixture-dir``), so no test depends on teaching converging on its machine.

Usage (also what the ``taught_policy_dir`` test fixture does)::

    teach_policy(tiny_checkpoints.policy, out_dir, '<think> ... </think><answer>{...}</answer>')
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wise_perception.core.geometry import ResizeProtocol
from wise_perception.core.prompts import AnswerSchema, PromptMode, build_messages, spec_for

__all__ = [
    "DEMO_COMPLETION",
    "TAUGHT_COMPLETION",
    "TAUGHT_MULTI_COMPLETION",
    "TEACH_QUESTIONS",
    "TeachError",
    "teach_policy",
    "verify_policy",
]

# What the shared test policies are taught to answer (840x840 policy frame): one object, and
# two objects in VisionReasoner's multi-object schema.
TAUGHT_COMPLETION = (
    "<think> the red square is on the left </think>"
    '<answer>{"bbox": [100,200,400,500], "points_1": [200,300], "points_2": [300,400]}</answer>'
)
TAUGHT_MULTI_COMPLETION = (
    "<think> two boxes </think>"
    '<answer>[{"bbox_2d": [10,20,300,400], "point_2d": [150,210]}, '
    '{"bbox_2d": [500,560,780,800], "point_2d": [640,690]}]</answer>'
)
# What `make demo` teaches: the red square of the tiny models' demo image (DEMO_RED_SQUARE_XYXY
# = 120,80,200,160 in 320x240), in the 840x840 policy frame (x*840/320, y*840/240).
DEMO_COMPLETION = (
    "<think> the red square is in the middle </think>"
    '<answer>{"bbox": [315,280,525,560], "points_1": [420,420], "points_2": [368,350]}</answer>'
)

# Questions seen in training; verification uses different ones (generalisation check).
TEACH_QUESTIONS: tuple[str, ...] = (
    "the red square",
    "the cup on the left",
    "What object can a robot use to hold hot coffee?",
    "the person holding an umbrella.",
    "segment the bottle next to the gripper",
    "the smallest object on the desk",
)
_VERIFY_QUESTIONS: tuple[str, ...] = (
    "the blue mug behind the laptop",
    "Something you can sit on",
)
_MODES: tuple[PromptMode, ...] = (
    PromptMode.WISE_S,
    PromptMode.WISE,
    PromptMode.SEG_ZERO,
    PromptMode.WISE_F,
)
_IMAGE_SIZES: tuple[tuple[int, int], ...] = ((64, 48), (320, 240), (96, 128), (200, 200))


# Smallest top-1 minus top-2 logit gap accepted at any greedy step of the verification: float32
# results differ across CPUs and thread counts by ~1e-5, so 2.0 is a margin of five decades.
MIN_MARGIN = 2.0
# A prompt far longer than the taught ones, so verification also pads a prompt on its left by a lot.
_LONG_QUESTION = (
    "the small red cup on the left of the laptop next to the robot gripper, behind the blue "
    "bottle and in front of the green plant on the wooden kitchen table near the window"
)
FIXTURE_MARKER = ".taught"


class TeachError(RuntimeError):
    """The taught policy does not emit the completion exactly."""


def _random_image(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    # A flat rectangle on noise, like the demo scenes.
    x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    image[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.integers(0, 256, 3, dtype=np.uint8)
    return image


def _prompt_text(processor: Any, question: str, mode: PromptMode, schema: AnswerSchema) -> str:
    messages = build_messages(question, spec_for(mode, schema=schema))
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


_WORDS = tuple(
    sorted(
        {w.strip(".,?'").lower() for q in TEACH_QUESTIONS for w in q.split()}
        | {
            "box",
            "boxes",
            "both",
            "left",
            "right",
            "top",
            "chair",
            "table",
            "robot",
            "green",
            "small",
            "large",
            "near",
            "far",
            "behind",
            "pick",
            "up",
            "find",
            "all",
            "apple",
            "door",
            "two",
            "one",
        }
    )
)


def _question(pyrng: random.Random, questions: Sequence[str]) -> str:
    """A listed question half of the time, else a few random words (the policy must ignore it)."""
    if pyrng.random() < 0.5:
        return pyrng.choice(questions)
    return " ".join(pyrng.choice(_WORDS) for _ in range(pyrng.randint(1, 8)))


def _examples(
    rng: np.random.Generator, pyrng: random.Random, n: int, questions: Sequence[str]
) -> list[tuple[np.ndarray, str, PromptMode, AnswerSchema]]:
    frame = ResizeProtocol()
    out = []
    for _ in range(n):
        image = frame.resize(_random_image(rng, pyrng.choice(_IMAGE_SIZES)))
        out.append(
            (
                image,
                _question(pyrng, questions),
                pyrng.choice(_MODES),
                pyrng.choice(list(AnswerSchema)),
            )
        )
    return out


def verify_policy(
    model: Any, processor: Any, completion: str, *, seed: int = 1, n: int = 6
) -> tuple[list[str], float]:
    """Greedy outputs of ``model`` on ``n`` held-out images and questions, and the smallest
    top-1 minus top-2 logit gap over every step up to the end of the completion.

    Each held-out example is generated alone, and in a left-padded pair with a much longer
    prompt (as the pipeline batches them), so padding is checked both ways.
    """
    import torch

    rng, pyrng = np.random.default_rng(seed + 1000), random.Random(seed + 1000)
    tokenizer = processor.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    target = len(tokenizer.encode(completion, add_special_tokens=False)) + 1  # + end of turn
    examples = _examples(rng, pyrng, n, _VERIFY_QUESTIONS)
    long_image = ResizeProtocol().resize(_random_image(rng, (96, 128)))
    outputs: list[str] = []
    margin = float("inf")
    try:
        for image, question, mode, schema in examples:
            groups = (
                [(image, question)],
                [(image, question), (long_image, _LONG_QUESTION)],
            )
            for group in groups:
                texts = [_prompt_text(processor, q, mode, schema) for _, q in group]
                inputs = processor(
                    text=texts, images=[e[0] for e in group], padding=True, return_tensors="pt"
                )
                with torch.no_grad():
                    out = model.generate(
                        **inputs,
                        max_new_tokens=target + 2,
                        do_sample=False,
                        output_scores=True,
                        return_dict_in_generate=True,
                    )
                row = out.sequences[0, inputs["input_ids"].shape[1] :]
                outputs.append(tokenizer.decode(row, skip_special_tokens=True))
                for scores in out.scores[:target]:
                    top2 = torch.topk(scores[0].float(), 2).values
                    margin = min(margin, float(top2[0] - top2[1]))
    finally:
        tokenizer.padding_side = side
    return outputs, margin


def teach_policy(
    base_dir: Path,
    out_dir: Path,
    completion: str,
    *,
    steps: int = 150,
    seed: int = 0,
    lr: float = 5e-3,
    batch_size: int = 2,
    progress: Callable[[int, int, str], None] | None = None,
) -> Path:
    """Fine-tune the policy in ``base_dir`` to answer ``completion`` to everything; save it in
    ``out_dir`` (model + processor, ``save_pretrained``). Returns ``out_dir``.

    Raises :class:`TeachError` when greedy decoding on held-out inputs does not reproduce
    ``completion`` exactly after ``steps`` (and up to ``steps`` more) Adam steps.
    ``progress(steps done, steps planned so far, what happens now)`` is called after each step
    and before each greedy check.
    """
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    base_dir, out_dir = Path(base_dir), Path(out_dir)
    torch.manual_seed(seed)
    rng, pyrng = np.random.default_rng(seed), random.Random(seed)
    processor = AutoProcessor.from_pretrained(base_dir)
    # Left padding, as the inference backend batches: the taught answer must survive padding.
    processor.tokenizer.padding_side = "left"
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
    model.train()
    tokenizer = processor.tokenizer
    target_ids = [*tokenizer.encode(completion, add_special_tokens=False), tokenizer.eos_token_id]
    if tokenizer.decode(target_ids, skip_special_tokens=True) != completion:
        raise TeachError("the tokenizer does not round-trip the completion; it cannot be taught")

    def batch() -> dict[str, Any]:
        examples = _examples(rng, pyrng, batch_size, TEACH_QUESTIONS)
        prompts = [_prompt_text(processor, q, m, s) for _, q, m, s in examples]
        full = [p + completion + tokenizer.eos_token for p in prompts]
        inputs = processor(
            text=full, images=[e[0] for e in examples], padding=True, return_tensors="pt"
        )
        labels = torch.full_like(inputs["input_ids"], -100)
        labels[:, -len(target_ids) :] = torch.tensor(target_ids)  # left padding: all rows end here
        inputs["labels"] = labels
        return inputs

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    budget = planned = steps
    done = 0
    margin = 0.0
    while True:
        # Linear decay to 10 % within each round: large steps first, then settle exactly.
        for i in range(budget):
            for group in optimizer.param_groups:
                group["lr"] = lr * (1.0 - 0.9 * i / budget)
            loss = model(**batch()).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if progress is not None:
                progress(done, planned, f"loss {float(loss):.3f}")
        model.eval()
        if progress is not None:
            progress(done, planned, "checking greedy answers")
        outputs, margin = verify_policy(model, processor, completion, seed=seed)
        if all(o == completion for o in outputs) and margin >= MIN_MARGIN:
            break
        if done >= 6 * steps:
            wrong = [o for o in outputs if o != completion]
            raise TeachError(
                f"after {done} steps the policy emits {(wrong or outputs)[0]!r} "
                f"(smallest greedy margin {margin:.3f} < {MIN_MARGIN}), not {completion!r}"
            )
        model.train()
        budget = steps // 2
        planned += budget
    model.generation_config.max_new_tokens = max(64, len(target_ids) + 16)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    # Written last: the folder is complete, and says what it answers and how surely.
    (out_dir / FIXTURE_MARKER).write_text(
        json.dumps({"completion": completion, "steps": done, "min_margin": round(margin, 3)}) + "\n"
    )
    return out_dir


def fixture_name(completion: str, variant: str = "") -> str:
    """Folder name of the fixture taught to answer ``completion`` (stable across machines);
    ``variant`` names another base model (e.g. ``hd32``, the head_dim-32 policy for vLLM)."""
    import hashlib

    prefix = f"taught_{variant}_" if variant else "taught_"
    return prefix + hashlib.sha256(completion.encode()).hexdigest()[:12]


def taught_completion(folder: Path) -> str | None:
    """What a complete taught folder answers; None when it is not one."""
    try:
        return json.loads((Path(folder) / FIXTURE_MARKER).read_text())["completion"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wise_dev.teach",
        description="Teach a tiny random policy (testing.tiny_models) to answer one completion "
        "(offline, CPU), to a verified greedy margin.",
    )
    parser.add_argument("--base", type=Path, required=True, help="tiny policy folder to start from")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="output folder")
    where.add_argument(
        "--fixture-dir",
        type=Path,
        help="write into FIXTURE_DIR/taught_<hash of the completion> (the tests' fixtures)",
    )
    parser.add_argument(
        "--completion",
        default=TAUGHT_COMPLETION,
        help="what to answer (default: the tests' TAUGHT_COMPLETION)",
    )
    parser.add_argument(
        "--variant", default="", help="fixture name prefix for another base model (e.g. hd32)"
    )
    args = parser.parse_args(argv)
    out = args.out or args.fixture_dir / fixture_name(args.completion, args.variant)
    start = time.perf_counter()
    try:
        teach_policy(args.base, out, args.completion)
    except (OSError, TeachError) as exc:
        print(f"teach: {exc}", file=sys.stderr)
        return 1
    print(f"taught policy: {out} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
