"""The own decode engine and the forced answer schema against ``model.generate`` (tiny
real Qwen2.5-VL models, random or taught weights, float32 on CPU; nothing timed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from wise_dev.decoding import at_least, rows_agree, scripted
from wise_dev.teach import TAUGHT_COMPLETION, TAUGHT_MULTI_COMPLETION
from wise_perception.core.prompts import build_instruction, spec_for
from wise_perception.policy.transformers.backend import TransformersPolicy
from wise_perception.policy.transformers.engine import Qwen25VLEngine
from wise_perception.policy.transformers.forced_schema import (
    MULTI_CLOSE,
    MULTI_NEXT,
    MULTI_OPEN,
    SINGLE_SEQUENCE,
    AnswerGrammar,
    RowMachine,
    forward_passes,
    pieces_round_trip,
)
from wise_perception.result import Status

# Text where the first number belongs: the schema must let go, the parser must refuse it.
LEAVING_COMPLETION = (
    "<think> the red square is on the left </think>"
    '<answer>{"bbox": [left,200,400,500], "points_1": [200,300], "points_2": [300,400]}</answer>'
)
# Relative top-1/top-2 logit margin below which a greedy choice is a tie (float32 noise).
TIE_TOLERANCE = 1e-4


def _image(width: int, height: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _margins(step_logits: Sequence[torch.Tensor]) -> list[list[float]]:
    """Per row and step: (top1 - top2) / max(|top1|, 1) of the reference's logits."""
    stacked = torch.stack([s.float() for s in step_logits], dim=1)  # (B, T, V)
    top = stacked.topk(2, dim=-1).values
    margin = (top[..., 0] - top[..., 1]) / top[..., 0].abs().clamp(min=1.0)
    return margin.tolist()


def assert_greedy_agree(
    reference: Sequence[Sequence[int]],
    candidate: Sequence[Sequence[int]],
    step_logits: Sequence[torch.Tensor] | None,
) -> None:
    """Equal ids, or a first divergence at a genuine tie of the reference (see rows_agree)."""
    margins = _margins(step_logits) if step_logits is not None else None
    ok, why = rows_agree(reference, candidate, margins, rel_tol=TIE_TOLERANCE)
    assert ok, why


def _trim(row: list[int], eos: int, pad: int) -> list[int]:
    if eos in row:
        return row[: row.index(eos) + 1]
    return row


def _reference(policy: TransformersPolicy, inputs, max_new: int, min_new: int = 0):
    out = policy.model.generate(
        **inputs,
        max_new_tokens=max_new,
        min_new_tokens=min_new or None,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    rows = out.sequences[:, inputs["input_ids"].shape[1] :].tolist()
    eos, pad = policy.tokenizer.eos_token_id, policy.tokenizer.pad_token_id
    return [_trim(r, eos, pad) for r in rows], out.logits


@pytest.fixture(scope="module")
def random_policy(tiny_policy_dir: Path) -> TransformersPolicy:
    return TransformersPolicy.from_pretrained(tiny_policy_dir, device="cpu", dtype="float32")


COMMANDS = ("the red cup", "the small thing on the left of the robot arm, next to the bottle")
SIZES = ((320, 240), (200, 300), (840, 840), (64, 48))


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("forced_length", [False, True])
def test_engine_ids_equal_generate(random_policy, batched: bool, forced_length: bool) -> None:
    """Free greedy decoding: several commands and image sizes, alone and left-padded."""
    policy = random_policy
    engine = Qwen25VLEngine(policy.model)
    eos, pad = policy.tokenizer.eos_token_id, policy.tokenizer.pad_token_id
    max_new = 20
    min_new = max_new if forced_length else 0
    cases = [
        [(COMMANDS[i % 2], SIZES[i])]
        if not batched
        else [(COMMANDS[0], SIZES[i]), (COMMANDS[1], SIZES[-1 - i])]
        for i in range(len(SIZES))
    ]
    for case in cases:
        texts = [policy.prompt_text(c) for c, _ in case]
        images = [_image(w, h, i) for i, (_, (w, h)) in enumerate(case)]
        inputs = policy.processor(text=texts, images=images, padding=True, return_tensors="pt")
        with torch.inference_mode():
            ref, logits = _reference(policy, inputs, max_new, min_new)
            got = engine.generate(
                inputs,
                max_new_tokens=max_new,
                eos_ids={eos},
                pad_id=pad,
                choose=at_least(min_new, {eos}),
            )
        assert_greedy_agree(ref, got.rows, logits)
        assert got.forward_passes == max(len(r) for r in got.rows)


def test_rows_agree_only_forgives_ties() -> None:
    assert rows_agree([[1, 2, 3]], [[1, 2, 3]], None)[0]
    assert not rows_agree([[1, 2, 3]], [[1, 5, 3]], [[1.0, 0.5, 1.0]])[0]
    assert rows_agree([[1, 2, 3]], [[1, 5, 9]], [[1.0, 1e-6, 1.0]])[0]
    assert not rows_agree([[1, 2]], [[1, 2, 3]], [[1.0, 1.0]])[0]


# ---------------------------------------------------------------------- the forced schema


def test_schema_pieces_round_trip(random_policy) -> None:
    grammar = AnswerGrammar.build(random_policy.tokenizer)
    assert grammar is not None
    texts = set(pieces_round_trip(grammar))
    rest = len(grammar.trigger)
    expected = {p for p in SINGLE_SEQUENCE[1:] if p} | {MULTI_NEXT, MULTI_CLOSE}
    expected |= {SINGLE_SEQUENCE[0][rest:], MULTI_OPEN[rest:]}
    assert expected <= texts
    assert "</think>".startswith(grammar.trigger)


def test_a_tokenizer_that_merges_across_pieces_is_refused(random_policy) -> None:
    """If the tokenizer merged a forced piece with a digit, forcing would change the ids."""

    class Merging:
        """Wraps the tiny tokenizer; a token ending in '[' followed by the digit 1 becomes one
        token, as in a BPE that learned that merge."""

        def __init__(self, inner) -> None:
            self.inner = inner
            self.base = 1_000_000

        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            one = self.inner.convert_tokens_to_ids("1")
            out: list[int] = []
            for token in self.inner.encode(text, add_special_tokens=False):
                if (
                    out
                    and out[-1] < self.base
                    and token == one
                    and self.inner.decode([out[-1]]).endswith("[")
                ):
                    out[-1] += self.base
                else:
                    out.append(token)
            return out

        def decode(self, ids, skip_special_tokens: bool = True) -> str:
            return "".join(
                self.inner.decode([i - self.base]) + "1"
                if i >= self.base
                else self.inner.decode([i])
                for i in ids
            )

    tokenizer = random_policy.tokenizer
    assert AnswerGrammar.build(tokenizer) is not None
    assert AnswerGrammar.build(Merging(tokenizer)) is None


def test_schema_machine_lets_go_of_a_row_that_leaves_it(random_policy) -> None:
    tokenizer = random_policy.tokenizer
    grammar = AnswerGrammar.build(tokenizer)
    machine = RowMachine(grammar, allow_multi=False)
    ids = tokenizer.encode(LEAVING_COMPLETION, add_special_tokens=False)
    produced: list[int] = []
    while len(produced) < len(ids) and not machine.left:
        produced.append(ids[len(produced)])
        produced.extend(machine.feed(produced[-1], tokenizer.decode(produced)))
    assert machine.left and not machine.finished
    assert produced == ids[: len(produced)]
    # The valid answer is forced from the closing tag on: fewer forwards than tokens.
    assert forward_passes(grammar, tokenizer, TAUGHT_COMPLETION) < len(
        tokenizer.encode(TAUGHT_COMPLETION, add_special_tokens=False)
    )


def _pair(mode: str, schema: str = "single"):
    spec = spec_for(mode, schema=schema)
    return spec, [build_instruction("a", spec), build_instruction(COMMANDS[1], spec)]


@pytest.mark.parametrize(
    ("fixture", "completion", "schema"),
    [
        ("taught_policy_dir", TAUGHT_COMPLETION, "single"),
        ("taught_multi_policy_dir", TAUGHT_MULTI_COMPLETION, "multi"),
    ],
)
def test_forced_schema_gives_free_decodings_text(request, fixture, completion, schema) -> None:
    """A policy that follows the schema: same ids, text and token count as generate, in
    fewer sequential forwards; alone and batched with left padding; schema on and off."""
    folder = request.getfixturevalue(fixture)
    engine_policy = TransformersPolicy.from_pretrained(
        folder, device="cpu", dtype="float32", max_new_tokens=96
    )
    plain = TransformersPolicy(
        engine_policy.model, engine_policy.processor, engine="generate", max_new_tokens=96
    )
    free = TransformersPolicy(
        engine_policy.model, engine_policy.processor, forced_schema=False, max_new_tokens=96
    )
    assert engine_policy.engine_name == "engine" and engine_policy.grammar() is not None
    frames = [_image(840, 840, 1), _image(840, 840, 2)]
    stop = ("</answer>",)
    for mode in ("wise_s", "seg_zero"):
        spec, instructions = _pair(mode, schema)
        for batch in ([0], [0, 1]):
            args = ([frames[i] for i in batch], [instructions[i] for i in batch])
            want = plain.generate(*args, spec=spec, stop=stop)
            forced = engine_policy.generate(*args, spec=spec, stop=stop)
            unforced = free.generate(*args, spec=spec, stop=stop)
            for outputs in (forced, unforced):
                assert [o.text for o in outputs] == [completion] * len(batch)
                assert [o.generated_tokens for o in outputs] == [o.generated_tokens for o in want]
            for f, u, w in zip(forced, unforced, want, strict=True):
                assert f.forward_passes < u.forward_passes == w.generated_tokens
    # The schema is the request's: without a spec, or in a spec whose answer is not last
    # (wise_f: its d_think follows), the engine decodes freely.
    one = ([frames[0]], _pair("wise_s", schema)[1][:1])
    (no_spec,) = engine_policy.generate(*one, stop=stop)
    assert no_spec.text == completion
    assert no_spec.forward_passes == no_spec.generated_tokens
    spec_f, instructions_f = _pair("wise_f", schema)
    (wise_f,) = engine_policy.generate([frames[0]], instructions_f[:1], spec=spec_f)
    assert wise_f.forward_passes == wise_f.generated_tokens  # free: one forward per token


def test_forced_schema_ids_equal_generate(taught_policy_dir) -> None:
    policy = TransformersPolicy.from_pretrained(taught_policy_dir, device="cpu", dtype="float32")
    grammar = policy.grammar()
    engine = policy.engine()
    _, instructions = _pair("wise_s")
    texts = [policy.prompt_text(i) for i in instructions]
    images = [_image(320, 240, 3), _image(640, 480, 4)]
    inputs = policy.processor(text=texts, images=images, padding=True, return_tensors="pt")
    eos, pad = policy.tokenizer.eos_token_id, policy.tokenizer.pad_token_id
    with torch.inference_mode():
        ref, logits = _reference(policy, inputs, 80)
        machines = [RowMachine(grammar, allow_multi=False) for _ in texts]
        got = engine.generate_forced(
            inputs,
            machines,
            max_new_tokens=80,
            eos_ids={eos},
            pad_id=pad,
            decode=policy.tokenizer.decode,
            extra_slots=grammar.longest_piece + 1,
        )
    # The forced run stops right after </answer> (its last piece); generate ran to <|im_end|>.
    assert all(m.finished for m in machines)
    assert_greedy_agree([r[: len(g)] for r, g in zip(ref, got.rows, strict=True)], got.rows, logits)
    assert got.forward_passes < len(got.rows[0])


def test_policy_leaving_the_schema_is_unparsable(teach_tiny, tiny_sam2_dir) -> None:
    from wise_perception.pipeline import PipelineConfig, WisePipeline
    from wise_perception.segmenter import load_segmenter

    folder = teach_tiny(LEAVING_COMPLETION)
    policy = TransformersPolicy.from_pretrained(
        folder, device="cpu", dtype="float32", max_new_tokens=96
    )
    assert policy.engine_name == "engine" and policy.grammar() is not None
    with WisePipeline(
        policy, load_segmenter(tiny_sam2_dir, device="cpu"), PipelineConfig()
    ) as pipeline:
        result = pipeline.segment(_image(320, 240, 5), "the red square")
    assert result.status is Status.UNPARSABLE_ANSWER, result.error
    assert "invalid_json" in result.error


def test_teacher_forcing_generates_the_script(random_policy) -> None:
    """The benchmark's scripted chooser: a random policy writes a given completion, freely (one
    forward per token) and with the forced schema (the schema's count of forwards), every
    forward run in full."""
    policy = random_policy
    grammar = policy.grammar()
    assert grammar is not None
    completion = TAUGHT_COMPLETION
    ids = policy.tokenizer.encode(completion, add_special_tokens=False)
    frame = _image(840, 840, 4)
    spec = spec_for("wise_s")
    instruction = build_instruction("the red square", spec)
    free = TransformersPolicy(policy.model, policy.processor, forced_schema=False)
    schema = TransformersPolicy(policy.model, policy.processor)
    for backend, passes in (
        (free, len(ids)),
        (schema, forward_passes(grammar, policy.tokenizer, completion)),
    ):
        backend.choose = scripted(ids, end=policy.tokenizer.eos_token_id)
        (out,) = backend.generate([frame], [instruction], spec=spec, stop=("</answer>",))
        assert out.text == completion and out.generated_tokens == len(ids)
        assert out.forward_passes == passes
    assert forward_passes(grammar, policy.tokenizer, completion) < len(ids)
    # Batched, the chooser follows each row's own position (rows of different prompt lengths).
    two = [instruction, build_instruction(COMMANDS[1], spec)]
    outs = schema.generate([frame, frame], two, spec=spec, stop=("</answer>",))
    assert [o.text for o in outs] == [completion, completion]


# ---------------------------------------------------------------------- vision tower


@pytest.mark.parametrize(
    "grids",
    [[(1, 8, 8)], [(1, 20, 28)], [(1, 36, 14)], [(1, 20, 28), (1, 8, 12)]],
    ids=["8x8", "20x28", "36x14", "two-images"],
)
def test_vision_tower_equals_transformers(random_policy, grids) -> None:
    """Windows of several sizes (edge windows are cut), one or two images: the same features
    as transformers' tower within float32 tolerance, from a layout computed once per grid."""
    from wise_perception.policy.transformers.vision import VisionTower, group_by_length

    visual = random_policy.model.model.visual
    config = visual.config
    tokens = sum(t * h * w for t, h, w in grids)
    generator = torch.Generator().manual_seed(tokens)
    channels = config.in_channels * config.temporal_patch_size * config.patch_size**2
    pixels = torch.randn(tokens, channels, generator=generator)
    grid_thw = torch.tensor(grids)
    tower = VisionTower(visual)
    with torch.inference_mode():
        want = visual(pixels, grid_thw=grid_thw).pooler_output
        got = tower(pixels, grid_thw)
        again = tower(pixels, grid_thw)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, got)
    assert tower.layout(grid_thw) is tower.layout(grid_thw.clone())  # computed once per grid
    # Three window sizes for a 20x28 grid: (4x4 merged units), cut at one edge, at both.
    groups = group_by_length([0, 64, 128, 160, 200], torch.device("cpu"))
    assert sorted(g.shape[1] for g in groups) == [32, 40, 64]
    assert sorted(torch.cat([g.flatten() for g in groups]).tolist()) == list(range(200))


# ---------------------------------------------------------------------- counts, int8, CUDA


def test_forward_passes_with_the_real_qwen_tokenizer() -> None:
    from wise_dev.bench import bench_completion
    from wise_dev.qwen_tokenizer import load_qwen_tokenizer

    tokenizer = load_qwen_tokenizer()
    if tokenizer is None:
        pytest.skip("the real Qwen2.5 tokenizer is not built (make qwen-tokenizer)")
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == 151645
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655
    grammar = AnswerGrammar.build(tokenizer)
    assert grammar is not None and grammar.trigger == "</"
    completion = bench_completion(tokenizer, 23)
    assert len(tokenizer.encode(completion, add_special_tokens=False)) == 79
    assert forward_passes(None, tokenizer, completion) == 79
    assert forward_passes(grammar, tokenizer, completion) == 50


def test_int8_weights_stay_close(random_policy) -> None:
    """Numerics only (random weights); the speed-up needs a GPU and accuracy real weights."""
    import copy

    from wise_perception.policy.transformers.int8 import Int8Linear, quantize_language_model

    model = copy.deepcopy(random_policy.model)
    linear = model.model.language_model.layers[0].mlp.up_proj
    x = torch.randn(3, linear.in_features, generator=torch.Generator().manual_seed(0))
    quantized = Int8Linear(linear)
    assert quantized.weight_int8.dtype == torch.int8
    torch.testing.assert_close(quantized(x), linear(x), rtol=0.05, atol=0.02)
    assert quantize_language_model(model) == 7 * len(model.model.language_model.layers)


def test_what_compile_captures_traces_as_whole_graphs(random_policy) -> None:
    """The decode step (both widths) and the vision tower trace with ``fullgraph=True``, no
    graph break, and give the eager results. Checked on the CPU with torch.compile's
    ``aot_eager`` backend (tracing and functionalisation of the cache writes, no kernels
    generated); the CUDA graphs themselves need a GPU."""
    policy = random_policy
    engine = Qwen25VLEngine(policy.model)
    texts = [policy.prompt_text(c) for c in COMMANDS]
    images = [_image(200, 300, 1), _image(320, 240, 2)]
    inputs = policy.processor(text=texts, images=images, padding=True, return_tensors="pt")
    length = inputs["input_ids"].shape[1]
    with torch.inference_mode():
        logits, offsets, padding, cache = engine.prefill(inputs, engine.cache_length(length, 8, 4))
        cursors = torch.full((2,), length, dtype=torch.long)
        for width, counts in ((1, [1, 1]), (4, [4, 2])):
            tokens = logits.argmax(-1)[:, None].repeat(1, width)
            args = (tokens, torch.tensor(counts), cursors, offsets, padding, cache.layers)
            want = engine._decode(*args)
            traced = torch.compile(engine._decode, backend="aot_eager", fullgraph=True)
            torch.testing.assert_close(traced(*args), want, rtol=1e-5, atol=1e-5)
        pixels, grid = inputs["pixel_values"], inputs["image_grid_thw"]
        layout = engine.vision.layout(grid)
        tower = torch.compile(engine.vision._forward, backend="aot_eager", fullgraph=True)
        torch.testing.assert_close(tower(pixels, layout), engine.vision(pixels, grid))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs / torch.compile need a GPU")
def test_compiled_engine_matches_eager_on_cuda(tiny_policy_dir) -> None:
    policy = TransformersPolicy.from_pretrained(
        tiny_policy_dir, device="cuda", dtype="float32", compile=True
    )
    eager = TransformersPolicy(policy.model, policy.processor, device="cuda")
    frame = _image(640, 480, 7)
    for _ in range(2):  # the second call replays the captured step
        got, want = policy.generate([frame], ["the cup"]), eager.generate([frame], ["the cup"])
        assert [o.text for o in got] == [o.text for o in want]
