"""wise-bench: per-stage latency of the pipeline (paper §4.3, wall-clock efficiency).

Default: the tiny random-weight models (built offline into a cache folder) on the CPU, at
640x480 and 1280x720. ``--full-size`` (GPU) builds random-weight Qwen2.5-VL-7B and SAM2-Large
from their published architectures (configs written below; nothing is downloaded) with the
real Qwen2.5 tokenizer when it is built (``make qwen-tokenizer``; else the tiny one) and a
processor that keeps 840x840 frames whole (900 vision tokens), so the compute is that of the
real models.

Random weights write junk, so the completion is forced to a WISE-S answer whose rationale is
``--think-tokens`` L tokens long (``bench_completion``). Every engine generates it by teacher
forcing: the policy's token chooser is :func:`wise_dev.decoding.scripted` (every forward runs
in full, only the choice of each token is the script's), in the own engine with the forced
answer schema (``engine+schema``) or without (``engine``), and in ``model.generate`` through a
logits processor that leaves only the script's token. SAM2 decodes the completion's box and
points. Every stage is real compute; only the words are stand-ins. The default lengths 23 and 112 are WISE-S's and Seg-Zero's mean #Tok on ReasonSeg
(paper Table 8), which shows the end-to-end speed-up that shorter reasoning buys.

Each iteration uses a fresh frame key, so the SAM2 encoder runs every time (no cache hits).

``--track``: SAM2 tracking per frame instead (:mod:`wise_dev.bench_tracking`): encoder, memory
attention, decoder and memory encoder against their floors, the tracked frame rate, and the
tracker's memory over a long stream.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wise_perception.backend_info import BackendInfo
from wise_perception.core.answer_schema import AnswerSchema, format_answer
from wise_perception.core.prompts import PromptMode, PromptSpec
from wise_perception.policy.base import PolicyBackend, PolicyOutput
from wise_perception.result import Timings

from .decoding import scripted

STAGES = (
    "preprocess",
    "policy_prefill",
    "policy_decode",
    "segmenter_encode",
    "segmenter_decode",
    "total",
)
DEFAULT_SIZES = ("640x480", "1280x720")
DEFAULT_THINK_TOKENS = (23, 112)  # paper Table 8, ReasonSeg: WISE-S 22.7, Seg-Zero 111.9

# The answer the forced-length policy hands on (policy frame), and the text it stands for.
BENCH_ANSWER = (
    "<answer>"
    + format_answer([((210, 210, 630, 630), ((350, 350), (490, 490)))], AnswerSchema.SINGLE)
    + "</answer>"
)

# Qwen2.5-VL-7B-Instruct's published architecture (transformers 5 form: text_config +
# rope_parameters). Token ids are filled in from the tokenizer actually used.
QWEN25_VL_7B: dict[str, Any] = {
    "text_config": {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "hidden_act": "silu",
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1e6,
            "mrope_section": [16, 24, 24],
        },
        "use_sliding_window": False,
        "sliding_window": 32768,
        "max_window_layers": 28,
        "attention_dropout": 0.0,
    },
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "hidden_act": "silu",
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
    },
    "tie_word_embeddings": False,
}

# SAM2.1-Hiera-Large (facebook/sam2.1-hiera-large): Hiera-L backbone, 1024x1024 input.
SAM2_LARGE: dict[str, Any] = {
    "vision_config": {
        "backbone_config": {
            "model_type": "sam2_hiera_det_model",
            "hidden_size": 144,
            "num_attention_heads": 2,
            "image_size": [1024, 1024],
            "blocks_per_stage": [2, 6, 36, 4],
            "embed_dim_per_stage": [144, 288, 576, 1152],
            "num_attention_heads_per_stage": [2, 4, 8, 16],
            "window_size_per_stage": [8, 4, 16, 8],
            "global_attention_blocks": [23, 33, 43],
            "window_positional_embedding_background_size": [7, 7],
        },
        "backbone_channel_list": [1152, 576, 288, 144],
        "backbone_feature_sizes": [[256, 256], [128, 128], [64, 64]],
        "fpn_hidden_size": 256,
    },
    "prompt_encoder_config": {"hidden_size": 256, "image_size": 1024, "patch_size": 16},
    "mask_decoder_config": {
        "hidden_size": 256,
        "mlp_dim": 2048,
        "num_attention_heads": 8,
        "iou_head_hidden_dim": 256,
    },
}
# Qwen2.5-VL's default pixel budget: an 840x840 frame stays whole (60x60 patches, 900 tokens).
FULL_MIN_PIXELS, FULL_MAX_PIXELS = 56 * 56, 28 * 28 * 16384


class ForcedLengthPolicy(PolicyBackend):
    """Wraps a transformers policy: generates a WISE-S completion with a rationale of
    ``think_tokens`` tokens by teacher forcing (see the module docstring); ``forward_passes``
    is what the last request's completion took."""

    def __init__(self, inner: Any, think_tokens: int) -> None:
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.think_tokens = int(think_tokens)
        self.completion = bench_completion(self.tokenizer, self.think_tokens)
        self.script = self.tokenizer.encode(self.completion, add_special_tokens=False)
        self.forward_passes = 0

    def generate(
        self,
        images: list[np.ndarray],
        instructions: list[str],
        *,
        spec: PromptSpec | None = None,
        stop: Sequence[str] = (),
    ) -> list[PolicyOutput]:
        inner = self.inner
        inner.max_new_tokens = len(self.script) + 8
        inner.choose = scripted(self.script, end=int(self.tokenizer.eos_token_id))
        try:
            outputs = inner.generate(images, instructions, spec=spec, stop=stop)
        finally:
            inner.choose = None
        self.forward_passes = outputs[0].forward_passes if outputs else 0
        return outputs

    def info(self) -> BackendInfo:
        return self.inner.info()

    def close(self) -> None:
        self.inner.close()


# Filler words for a rationale of an exact token length (only the count matters).
_THINK_WORDS = [
    "the",
    "red",
    "cup",
    "is",
    "on",
    "the",
    "left",
    "of",
    "the",
    "table",
    "next",
    "to",
    "the",
    "blue",
    "bottle",
    "and",
    "the",
    "robot",
    "gripper",
    "near",
    "the",
    "window",
    "in",
    "front",
    "of",
    "a",
    "plant",
    "pot",
]


def bench_completion(tokenizer: Any, think_tokens: int) -> str:
    """A WISE-S completion whose rationale is ``think_tokens`` tokens of ``tokenizer``."""
    words = 1
    while True:
        think = " " + " ".join((_THINK_WORDS * (1 + think_tokens))[:words]) + " "
        if len(tokenizer.encode(think, add_special_tokens=False)) >= think_tokens:
            return f"<think>{think}</think>{BENCH_ANSWER}"
        words += 1


def counting_tokenizer() -> Any:
    """The real Qwen2.5 tokenizer (``make qwen-tokenizer``), or None when it is not built."""
    from .qwen_tokenizer import load_qwen_tokenizer

    folder = os.environ.get("WISE_QWEN_TOKENIZER")
    return load_qwen_tokenizer(Path(folder) if folder else None)


def forward_pass_table(think_tokens: Sequence[int]) -> str:
    """Sequential forward passes per command for each engine: a count that holds on any
    hardware, measured by replaying the completion through the engines' schedules."""
    from wise_perception.policy.transformers.forced_schema import AnswerGrammar, forward_passes

    tokenizer = counting_tokenizer()
    name = "real Qwen2.5 tokenizer"
    if tokenizer is None:
        from .tiny_models import build_tiny_tokenizer

        tokenizer, name = build_tiny_tokenizer(), "TINY tokenizer (run `make qwen-tokenizer`)"
    grammar = AnswerGrammar.build(tokenizer)
    lines = [f"sequential forward passes per WISE-S command ({name}, prefill included)"]
    lines.append(f"{'#Tok':>5} {'tokens':>7} {'generate':>9} {'engine':>7} {'engine+schema':>14}")
    for length in think_tokens:
        completion = bench_completion(tokenizer, length)
        tokens = len(tokenizer.encode(completion, add_special_tokens=False))
        forced = forward_passes(grammar, tokenizer, completion) if grammar else tokens
        lines.append(f"{length:>5} {tokens:>7} {tokens:>9} {tokens:>7} {forced:>14}")
    if grammar is None:
        lines.append("(the forced schema failed its tokenizer check: the engine decodes freely)")
    return "\n".join(lines)


def verify_engines(cache_dir: Path, log: Any = print) -> bool:
    """Runs every engine on the tiny models (CPU) and checks that their tokens agree: free
    decoding of the random policy (engine vs generate, ties excepted), and the texts and token
    counts of a policy taught to answer (generate, engine, engine + forced schema)."""
    import torch

    from wise_perception.core.prompts import build_instruction, spec_for
    from wise_perception.policy.transformers.backend import TransformersPolicy
    from wise_perception.policy.transformers.engine import Qwen25VLEngine

    from .decoding import at_least, rows_agree
    from .teach import TAUGHT_COMPLETION, fixture_name, taught_completion, teach_policy
    from .tiny_models import build_tiny_checkpoints

    ckpts = build_tiny_checkpoints(cache_dir)
    ok = True
    policy = TransformersPolicy.from_pretrained(ckpts.policy, device="cpu", dtype="float32")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in ((640, 480), (320, 240))]
    texts = [policy.prompt_text("the cup"), policy.prompt_text("the small box left of the robot")]
    inputs = policy.processor(text=texts, images=images, padding=True, return_tensors="pt")
    eos, pad = policy.tokenizer.eos_token_id, policy.tokenizer.pad_token_id
    with torch.inference_mode():
        ref = policy.model.generate(
            **inputs,
            max_new_tokens=24,
            min_new_tokens=24,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
        got = Qwen25VLEngine(policy.model).generate(
            inputs, max_new_tokens=24, eos_ids={eos}, pad_id=pad, choose=at_least(24, {eos})
        )
    top = torch.stack(ref.logits, dim=1).float().topk(2, dim=-1).values
    margins = ((top[..., 0] - top[..., 1]) / top[..., 0].abs().clamp(min=1.0)).tolist()
    rows = ref.sequences[:, inputs["input_ids"].shape[1] :].tolist()
    agree, why = rows_agree(rows, got.rows, margins)
    log(f"verify: random policy, generate vs engine: {'ok' if agree else 'DIFFER ' + why}")
    ok &= agree

    # The taught policy kept in a checkout's tests/fixtures (margin-verified); else taught here.
    repo = Path(__file__).resolve().parents[2]
    taught = repo / "tests" / "fixtures" / "policies" / fixture_name(TAUGHT_COMPLETION)
    if taught_completion(taught) != TAUGHT_COMPLETION:
        taught = cache_dir / "taught_bench"
        if taught_completion(taught) != TAUGHT_COMPLETION:
            log("verify: teaching the tiny policy one answer (once, about a minute on CPU)")
            teach_policy(ckpts.policy, taught, TAUGHT_COMPLETION)
    base = TransformersPolicy.from_pretrained(taught, device="cpu", dtype="float32")
    engines = {
        "generate": TransformersPolicy(base.model, base.processor, engine="generate"),
        "engine": TransformersPolicy(base.model, base.processor, forced_schema=False),
        "engine+schema": base,
    }
    spec = spec_for("wise_s")
    instructions = [build_instruction("a", spec), build_instruction("the cup on the left", spec)]
    results = {}
    for name, engine in engines.items():
        outputs = engine.generate(images, instructions, spec=spec, stop=("</answer>",))
        results[name] = [(o.text, o.generated_tokens) for o in outputs]
        passes = [o.forward_passes for o in outputs]
        log(f"verify: taught policy, {name}: {passes} forward passes per command")
    same = all(r == results["generate"] for r in results.values())
    log(f"verify: taught policy, texts and token counts: {'ok' if same else 'DIFFER'}")
    return bool(ok and same)


@dataclass
class Row:
    model: str
    size: str
    think_tokens: int
    generated_tokens: int
    forward_passes: int  # sequential forwards per command, prefill included
    stats: dict[str, dict[str, float]]  # stage -> mean/p50/p90 in ms


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else 0.0


def summarize(timings: list[Timings]) -> dict[str, dict[str, float]]:
    out = {}
    for stage in STAGES:
        values = [getattr(t, stage) * 1000.0 for t in timings]
        out[stage] = {
            "mean": statistics.fmean(values) if values else 0.0,
            "p50": _percentile(values, 50),
            "p90": _percentile(values, 90),
        }
    return out


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from exc
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return width, height


# ---------------------------------------------------------------------- model building


def tiny_pipeline_parts(
    cache_dir: Path, device: str | None, dtype: Any, compile: bool = False
) -> tuple[Any, Any, str]:
    from wise_perception.policy.transformers.backend import TransformersPolicy
    from wise_perception.segmenter.sam2_transformers import Sam2TransformersSegmenter

    from .tiny_models import build_tiny_checkpoints

    ckpts = build_tiny_checkpoints(cache_dir)
    policy = TransformersPolicy.from_pretrained(
        ckpts.policy, device=device, dtype=dtype, compile=compile
    )
    segmenter = Sam2TransformersSegmenter.from_pretrained(
        ckpts.sam2, device=device, dtype=dtype, compile=compile
    )
    return policy, segmenter, "tiny"


def full_size_parts(
    cache_dir: Path, device: str | None, dtype: Any, compile: bool = False
) -> tuple[Any, Any, str]:
    """Random-weight Qwen2.5-VL-7B + SAM2-Large, built directly on the device (no download)."""
    import torch
    from transformers import (
        AutoProcessor,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Sam2Config,
        Sam2ImageProcessor,
        Sam2Model,
        Sam2Processor,
    )

    from wise_perception.device import resolve_device, resolve_dtype
    from wise_perception.policy.transformers.backend import TransformersPolicy
    from wise_perception.segmenter.sam2_transformers import Sam2TransformersSegmenter

    from .tiny_models import build_tiny_checkpoints

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    ckpts = build_tiny_checkpoints(cache_dir)
    tiny = AutoProcessor.from_pretrained(ckpts.policy)
    # The real Qwen2.5 tokenizer when built: real prompt lengths and completion token ids.
    tok = counting_tokenizer() or tiny.tokenizer
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            size={"shortest_edge": FULL_MIN_PIXELS, "longest_edge": FULL_MAX_PIXELS},
            patch_size=14,
            merge_size=2,
            temporal_patch_size=2,
        ),
        tokenizer=tok,
        video_processor=tiny.video_processor,
        chat_template=tiny.chat_template,
    )
    ids = {
        name: tok.convert_tokens_to_ids(name)
        for name in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    }
    text = dict(
        QWEN25_VL_7B["text_config"],
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.pad_token_id,
    )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=QWEN25_VL_7B["vision_config"],
        tie_word_embeddings=False,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch_dtype).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    policy = TransformersPolicy(
        model, processor, device=device, name="qwen2.5-vl-7b (random)", compile=compile
    )
    with torch.device(device):
        sam = Sam2Model._from_config(Sam2Config(**SAM2_LARGE), dtype=torch_dtype).eval()
    sam_processor = Sam2Processor(
        image_processor=Sam2ImageProcessor(size={"height": 1024, "width": 1024})
    )
    segmenter = Sam2TransformersSegmenter(
        sam, sam_processor, device=device, name="sam2-large (random)", compile=compile
    )
    return policy, segmenter, "qwen2.5-vl-7b+sam2-large"


# ---------------------------------------------------------------------- running


def run_bench(
    policy: Any,
    segmenter: Any,
    model_name: str,
    *,
    sizes: Sequence[tuple[int, int]],
    think_tokens: Sequence[int],
    iterations: int,
    warmup: int,
    mode: str = PromptMode.WISE_S.value,
    log: Any = None,
) -> list[Row]:
    from wise_perception.pipeline import PipelineConfig, WisePipeline

    rows = []
    rng = np.random.default_rng(0)
    for length in think_tokens:
        forced = ForcedLengthPolicy(policy, length)
        # The models are shared by every row: the pipeline must not close them.
        pipeline = WisePipeline(
            forced, segmenter, PipelineConfig(mode=mode, cache_size=2), owns_models=False
        )
        for width, height in sizes:
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            timings, generated, passes = [], 0, 0
            for i in range(warmup + iterations):
                result = pipeline.segment(
                    image, "the object on the left", frame_key=("bench", length, width, i)
                )
                if not result.ok:
                    raise RuntimeError(
                        f"benchmark request failed: {result.status.value}: {result.error}"
                    )
                if i >= warmup:
                    timings.append(result.timings)
                    generated = result.generated_tokens
                    passes = forced.forward_passes
            size = f"{width}x{height}"
            rows.append(Row(model_name, size, length, generated, passes, summarize(timings)))
            if log:
                log(f"  done: think {length}, {width}x{height}")
        pipeline.close()
    return rows


# int8 last: it quantizes the shared model's language layers in place.
ENGINE_CHOICES = ("generate", "generate+compile", "engine", "engine+schema", "engine+schema+int8")


def engine_variant(policy: Any, engine: str, *, compile: bool) -> Any:
    """The same model behind another decode loop (None where it needs CUDA and there is none)."""
    from wise_perception.policy.transformers.backend import TransformersPolicy

    cuda = str(policy.device).startswith("cuda")
    if engine == "generate+compile" and not cuda:
        return None
    return TransformersPolicy(
        policy.model,
        policy.processor,
        device=policy.device,
        name=policy.name,
        engine="generate" if engine.startswith("generate") else "engine",
        compile=engine == "generate+compile" or (engine.startswith("engine") and compile),
        forced_schema="schema" in engine,
        int8_decode=engine.endswith("int8"),
    )


def command_floors(policy: Any, segmenter: Any) -> Any:
    """Floors of a WISE-S request on this device (the policy frame is the same for every size)."""
    from wise_perception.core.geometry import POLICY_FRAME
    from wise_perception.core.prompts import build_instruction, spec_for

    from .floors import policy_floors

    frame = np.random.default_rng(0).integers(
        0, 256, (POLICY_FRAME, POLICY_FRAME, 3), dtype=np.uint8
    )
    return policy_floors(
        policy, segmenter, frame, build_instruction("the object on the left", spec_for("wise_s"))
    )


def floors_table(rows: list[Row], floors: Any) -> str:
    """Measured time, physical floor and their ratio per stage (means over the timed runs)."""
    rates = floors.rates
    lines = [
        f"physical floors on {rates.device}: measured {rates.bandwidth / 1e9:.0f} GB/s copy "
        f"bandwidth, {rates.flops / 1e12:.1f} TFLOP/s matmul",
        f"{'model':<40} {'image':>9} {'#Tok':>5} {'stage':>16} {'measured ms':>12} "
        f"{'floor ms':>9} {'ratio':>7}",
    ]
    for row in rows:
        steps = max(row.forward_passes - 1, 1)  # decode steps: the prefill is the first
        stats = {k: v["mean"] for k, v in row.stats.items()}
        cells = [
            ("prefill+vision", stats["policy_prefill"], (floors.vision + floors.prefill) * 1e3),
            ("decode/step", stats["policy_decode"] / steps, floors.decode_step * 1e3),
            ("sam_encode", stats["segmenter_encode"], floors.sam_encode * 1e3),
            ("total", stats["total"], floors.command(steps) * 1e3),
        ]
        for stage, measured, floor in cells:
            ratio = f"{measured / floor:>7.1f}" if floor > 0 else f"{'-':>7}"
            lines.append(
                f"{row.model:<40} {row.size:>9} {row.think_tokens:>5} {stage:>16} "
                f"{measured:>12.2f} {floor:>9.3f} {ratio}"
            )
    lines.append("(total floor: vision + prefill + decode steps; SAM2's encode overlaps them)")
    return "\n".join(lines)


def format_table(rows: list[Row], iterations: int) -> str:
    head = f"{'model':<34} {'image':>9} {'#Tok':>5} {'gen':>5} {'fwd':>5} " + " ".join(
        f"{s.replace('segmenter_', 'sam_').replace('policy_', ''):>16}" for s in STAGES
    )
    lines = [
        f"per-stage latency in ms, mean / p50 / p90 over {iterations} run(s)",
        head,
        "-" * len(head),
    ]
    for row in rows:
        cells = " ".join(
            f"{row.stats[s]['mean']:>5.0f}/{row.stats[s]['p50']:>4.0f}/{row.stats[s]['p90']:>4.0f}"
            for s in STAGES
        )
        lines.append(
            f"{row.model:<34} {row.size:>9} {row.think_tokens:>5} {row.generated_tokens:>5} "
            f"{row.forward_passes:>5} {cells}"
        )
    by_size: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        by_size.setdefault((row.model, row.size), []).append(row)
    for (model, size), group in by_size.items():
        if len(group) > 1:
            short, long_ = (
                min(group, key=lambda r: r.think_tokens),
                max(group, key=lambda r: r.think_tokens),
            )
            ratio = long_.stats["total"]["mean"] / max(short.stats["total"]["mean"], 1e-9)
            lines.append(
                f"{model} {size}: total with {short.think_tokens} reasoning tokens is "
                f"{ratio:.2f}x faster than with {long_.think_tokens}"
            )
    # Note: SAM2 encode runs on a worker thread while the policy generates, so the stages
    # overlap and do not add up to the total.
    lines.append("(sam_encode overlaps policy generation; stages do not sum to total)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wise-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", "-n", type=int, default=10, help="timed runs per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=_parse_size,
        default=[_parse_size(s) for s in DEFAULT_SIZES],
        help="image sizes WIDTHxHEIGHT (default: 640x480 1280x720)",
    )
    parser.add_argument(
        "--think-tokens",
        nargs="+",
        type=int,
        default=list(DEFAULT_THINK_TOKENS),
        help="forced reasoning lengths (default: 23 112, WISE-S vs Seg-Zero)",
    )
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="random-weight Qwen2.5-VL-7B + SAM2-Large (needs a GPU)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="CUDA: also compile SAM2's image encoder (the engine rows are compiled on CUDA "
        "anyway; warm-up runs absorb the compile)",
    )
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where the tiny models are built (default: $WISE_TINY_CACHE or a temp folder)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--track",
        action="store_true",
        help="benchmark SAM2 tracking per frame instead of commands (with --full-size: "
        "SAM2.1-Large's architecture, random weights)",
    )
    parser.add_argument(
        "--track-frames",
        type=int,
        default=300,
        help="frames tracked per size with --track (default: %(default)s)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="run every engine on the tiny models (CPU) and exit non-zero unless tokens agree",
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=ENGINE_CHOICES,
        default=None,
        help="decode loops to time in one run (default: all on CUDA, where the engine is "
        "compiled too; all but generate+compile and int8 on CPU)",
    )
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0 or any(n < 1 for n in args.think_tokens):
        parser.error("--iterations and --think-tokens must be >= 1, --warmup >= 0")

    cache = args.cache_dir or Path(
        os.environ.get("WISE_TINY_CACHE") or Path(tempfile.gettempdir()) / "wise_bench_tiny"
    )
    if args.track:
        return track_main(args, cache)
    print(forward_pass_table(args.think_tokens))
    if args.verify:
        agree = verify_engines(cache, log=lambda msg: print(msg, file=sys.stderr))
        print("verify: all engines agree" if agree else "verify: ENGINES DISAGREE")
        return 0 if agree else 1
    started = time.perf_counter()
    build = full_size_parts if args.full_size else tiny_pipeline_parts
    try:
        policy, segmenter, name = build(cache, args.device, args.dtype, args.compile)
    except Exception as exc:
        print(
            f"wise-bench: could not build the models: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 3
    cuda = str(policy.device).startswith("cuda")
    engines = args.engines or (
        list(ENGINE_CHOICES)
        if cuda
        else [e for e in ENGINE_CHOICES if "compile" not in e and "int8" not in e]
    )
    engines = sorted(engines, key=ENGINE_CHOICES.index)  # int8 last (see ENGINE_CHOICES)
    print(
        f"built {name} on {policy.device} in {time.perf_counter() - started:.1f} s", file=sys.stderr
    )
    rows: list[Row] = []
    floors = None
    try:
        for engine in engines:
            variant = engine_variant(
                policy, engine, compile=cuda and (args.compile or engine != "generate")
            )
            if variant is None:
                print(f"wise-bench: {engine} needs CUDA; skipped", file=sys.stderr)
                continue
            label = f"{name}+{engine}" + (
                "+compile" if variant.compile and "compile" not in engine else ""
            )
            rows += run_bench(
                variant,
                segmenter,
                label,
                sizes=args.sizes,
                think_tokens=args.think_tokens,
                iterations=args.iterations,
                warmup=args.warmup,
                log=lambda msg: print(msg, file=sys.stderr),
            )
        floors = command_floors(policy, segmenter)
    finally:
        policy.close()
        segmenter.close()
    print(format_table(rows, args.iterations))
    if floors is not None:
        print(floors_table(rows, floors))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        figures = {
            "device": str(policy.device),
            "iterations": args.iterations,
            "warmup": args.warmup,
            "rows": [row.__dict__ for row in rows],
            "floors": None
            if floors is None
            else {
                "vision_ms": floors.vision * 1e3,
                "prefill_ms": floors.prefill * 1e3,
                "decode_step_ms": floors.decode_step * 1e3,
                "sam_encode_ms": floors.sam_encode * 1e3,
                "bandwidth_gb_s": floors.rates.bandwidth / 1e9,
                "tflop_s": floors.rates.flops / 1e12,
            },
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


def track_main(args: argparse.Namespace, cache: Path) -> int:
    """``--track`` (bench_tracking's module doc)."""
    from .bench_tracking import (
        format_tracking_table,
        full_size_tracker,
        rows_as_json,
        run_tracking_bench,
        tiny_tracker,
    )
    from .floors import measure_rates

    if args.track_frames < 1:
        print("wise-bench: --track-frames must be >= 1", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        build = full_size_tracker if args.full_size else lambda d, t: tiny_tracker(cache, d, t)
        tracker, name = build(args.device, args.dtype)
    except Exception as exc:
        print(
            f"wise-bench: could not build the tracker: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 3
    print(
        f"built {name} on {tracker.device} in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    rates = measure_rates(str(tracker.device), next(tracker.model.parameters()).dtype)
    rows = run_tracking_bench(
        tracker,
        name,
        sizes=args.sizes,
        frames=args.track_frames,
        warmup=args.warmup,
        rates=rates,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    print(
        f"physical floors on {rates.device}: measured {rates.bandwidth / 1e9:.0f} GB/s copy "
        f"bandwidth, {rates.flops / 1e9:.0f} GFLOP/s matmul"
    )
    print(format_tracking_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        figures = {"device": str(tracker.device), "tracking": rows_as_json(rows)}
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
