"""The prompt contract: the user instruction for every training and inference mode.

Every mode is rendered from ONE template, so training, evaluation, the CLI and the node
send byte-identical instructions for the same mode. The wording follows the authors'
release (mrazhou/WISE, ``verl/utils/rl_dataset.py`` for training and
``evaluation_scripts/evaluation.py`` for inference), itself a fork of Seg-Zero
(dvlab-research/Seg-Zero at 77f9ea5). As there, the sentences are concatenated without
spaces ("...points.Compare..."): released checkpoints were trained on exactly that text.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from .answer_schema import AnswerSchema, format_answer
from .limits import MAX_COMMAND_CHARS

# Spans of a completion (paper §3.2): concise rationale c, answer a, detailed explanation d.
THINK = "think"
ANSWER = "answer"
D_THINK = "d_think"
SPANS = (THINK, ANSWER, D_THINK)

# Default brevity instruction of WISE-S (paper §3.3 and §4 "Inference Strategies": "one sentence";
# released evaluation.py puts it inside the think example as "(one sentence)").
DEFAULT_BREVITY = "one sentence"

# Kept under its old name for callers; the bound itself lives in core.limits.
MAX_QUESTION_CHARS = MAX_COMMAND_CHARS


class PromptMode(str, Enum):
    """Named instruction modes (values are what configs, manifests and CLIs accept)."""

    SEG_ZERO = "seg_zero"  # baseline: think -> answer (Seg-Zero's prompt)
    WISE_TRAIN = "wise_train"  # training: think -> answer -> d_think (§3.2)
    WISE = "wise"  # default inference: d_think instruction removed (§4 Inference Strategies)
    WISE_S = "wise_s"  # WISE + injected brevity instruction (§3.3)
    WISE_F = "wise_f"  # inference that still generates d_think (Table 7, "WISE-F")
    # Generation-order ablations of Table 5 (training prompts with the spans reordered).
    ORDER_D_THINK_THINK_ANSWER = "order_d_think_think_answer"
    ORDER_THINK_D_THINK_ANSWER = "order_think_d_think_answer"
    ORDER_D_THINK_ANSWER_THINK = "order_d_think_answer_think"
    # Table 6's first row and the released "no_c_think" variant: d_think -> answer only.
    NO_CONCISE = "no_concise"


@dataclass(frozen=True)
class PromptSpec:
    """Which spans the completion must contain, in generation order, and how they are described."""

    order: tuple[str, ...]
    brevity: str | None = None
    # Seg-Zero calls the rationale "the thinking process"; WISE calls it "streamlined".
    think_word: str = "streamlined "
    schema: AnswerSchema = AnswerSchema.SINGLE
    # The example answer shown in the instruction; empty: the schema's (EXAMPLE_ANSWERS).
    example_answer: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    # The PromptMode value it renders ("" for a spec made by hand).
    mode: str = ""

    def __post_init__(self) -> None:
        if ANSWER not in self.order or len(set(self.order)) != len(self.order):
            raise ValueError(f"span order must contain 'answer' once, got {self.order}")
        unknown = set(self.order) - set(SPANS)
        if unknown:
            raise ValueError(f"unknown spans {sorted(unknown)}; known: {SPANS}")


# Example answers shown in the instruction, written by the schema (core.answer_schema) with
# the released numbers: the single-object one from the released code, the multi-object one from
# VisionReasoner (Seg-Zero repo, verl/utils/rl_dataset.py).
_EXAMPLE_BOX = (10, 100, 200, 210)
EXAMPLE_ANSWERS = {
    AnswerSchema.SINGLE: format_answer([(_EXAMPLE_BOX, ((30, 110), (35, 180)))], "single"),
    AnswerSchema.MULTI: format_answer(
        [(_EXAMPLE_BOX, ((30, 110),)), ((225, 296, 706, 786), ((302, 410),))], "multi"
    ),
}
# Seg-Zero's own prompt quotes its example with ' (its evaluation.py and rl_dataset.py pass
# Answer="{'bbox': ...}"): Seg-Zero checkpoints were trained on exactly this text.
SEG_ZERO_EXAMPLE_ANSWER = format_answer(
    [(_EXAMPLE_BOX, ((30, 110), (35, 180)))], "single", quote="'"
)


def spec_for(
    mode: PromptMode | str,
    *,
    brevity: str | None = DEFAULT_BREVITY,
    schema: AnswerSchema | str = AnswerSchema.SINGLE,
) -> PromptSpec:
    """The span order and wording of a mode. ``brevity`` only affects ``wise_s``."""
    mode = PromptMode(mode)
    schema = AnswerSchema(schema)
    orders: dict[PromptMode, tuple[str, ...]] = {
        PromptMode.SEG_ZERO: (THINK, ANSWER),
        PromptMode.WISE_TRAIN: (THINK, ANSWER, D_THINK),  # Eq. 2: c, then a, then d
        PromptMode.WISE: (THINK, ANSWER),
        PromptMode.WISE_S: (THINK, ANSWER),
        PromptMode.WISE_F: (THINK, ANSWER, D_THINK),
        PromptMode.ORDER_D_THINK_THINK_ANSWER: (D_THINK, THINK, ANSWER),
        PromptMode.ORDER_THINK_D_THINK_ANSWER: (THINK, D_THINK, ANSWER),
        PromptMode.ORDER_D_THINK_ANSWER_THINK: (D_THINK, ANSWER, THINK),
        PromptMode.NO_CONCISE: (ANSWER, D_THINK),
    }
    if mode is PromptMode.WISE_S and not (brevity and brevity.strip()):
        raise ValueError("wise_s needs a non-empty brevity instruction")
    seg_zero_single = mode is PromptMode.SEG_ZERO and schema is AnswerSchema.SINGLE
    return PromptSpec(
        order=orders[mode],
        brevity=brevity.strip() if mode is PromptMode.WISE_S and brevity else None,
        think_word="" if mode is PromptMode.SEG_ZERO else "streamlined ",
        schema=schema,
        example_answer=SEG_ZERO_EXAMPLE_ANSWER if seg_zero_single else "",
        mode=mode.value,
    )


def normalize_question(question: str, max_chars: int = MAX_QUESTION_CHARS) -> str:
    """The question as the released code sends it: ``question.lower().strip(".")``.

    Only what safety needs is added: control characters (other than tab and newline) are
    dropped, and empty or oversized commands raise ValueError so callers can report them.
    Whitespace is kept as given, as in the release.
    """
    if not isinstance(question, str):
        raise ValueError(f"command must be text, got {type(question).__name__}")
    if len(question) > max_chars:
        raise ValueError(f"command has {len(question)} characters; the limit is {max_chars}")
    text = "".join(c for c in question if c in "\t\n" or unicodedata.category(c) != "Cc")
    if not text.strip():
        raise ValueError("command is empty")
    return text.lower().strip(".")


@dataclass(frozen=True)
class Question:
    """A command checked once, where it came in (the node, the CLI): the text as sent (echoed
    in results), the text the prompt quotes (:func:`normalize_question`), and the limit it was
    checked against. :func:`build_instruction` quotes it without checking it again when that
    limit is no looser than its own."""

    sent: str
    text: str
    max_chars: int


def check_question(command: str, max_chars: int = MAX_COMMAND_CHARS) -> Question:
    """``command`` checked and normalised once; ValueError (saying why) when it cannot be served."""
    return Question(command, normalize_question(command, max_chars), max_chars)


def _join(clauses: Sequence[str]) -> str:
    if len(clauses) == 1:
        return clauses[0]
    return ", ".join(clauses[:-1]) + " and " + clauses[-1]


def build_instruction(
    question: str | Question, spec: PromptSpec, *, max_chars: int = MAX_COMMAND_CHARS
) -> str:
    """Render the user instruction for one question (the text part of the user turn).

    Rendering checks the question (ValueError saying why), unless it is a :class:`Question`
    already checked within ``max_chars``: a command is checked once on its way to the model.
    """
    if isinstance(question, Question):
        checked = question.max_chars <= max_chars
        q = question.text if checked else normalize_question(question.sent, max_chars)
    else:
        q = normalize_question(question, max_chars)
    multi = spec.schema is AnswerSchema.MULTI
    descriptions = {
        D_THINK: "the detailed thinking process in <d_think> </d_think>",
        THINK: f"the {spec.think_word}thinking process in <think> </think>",
        ANSWER: "final answer in <answer> </answer>",
    }
    # Released code always lists d_think first, then think, then the answer, whatever
    # the generation order; the order is taught by the example that follows.
    listed = [descriptions[s] for s in (D_THINK, THINK, ANSWER) if s in spec.order]
    if spec.order == (ANSWER, D_THINK):
        listed = [descriptions[D_THINK], "the " + descriptions[ANSWER]]
    think_example = f"{spec.think_word}thinking process here"
    if spec.brevity:
        think_example += f" ({spec.brevity})"
    examples = {
        THINK: f"<think> {think_example} </think>",
        ANSWER: f"<answer>{spec.example_answer or EXAMPLE_ANSWERS[spec.schema]}</answer>",
        D_THINK: "<d_think> detailed thinking process here </d_think>",
    }
    if multi:
        head = (
            f'Please find "{q}" with bboxs and points.'
            "Compare the difference between object(s) and find the most closely matched object(s)."
        )
        target = "Output the bbox(es) and point(s) inside the interested object(s) in JSON format."
    else:
        head = (
            f"Please find '{q}' with bbox and points."
            "Compare the difference between objects and find the most closely matched one."
        )
        target = (
            "Output the one bbox and points of two largest inscribed circles inside the "
            "interested object in JSON format."
        )
    example_spans = "".join(examples[s] for s in spec.order)
    lead = "" if spec.order[0] == ANSWER else "i.e., "
    return f"{head}Output {_join(listed)} tags.{target}{lead}{example_spans}"


def chat_messages(
    instruction: str, *, system: str | None = None, image: dict[str, object] | None = None
) -> list[dict[str, object]]:
    """The chat envelope of every policy call, in training and inference alike: an optional
    system turn, then one user turn with the image first and the instruction after it.

    ``system``: None or empty leaves the system turn to the chat template's default (Qwen's
    writes "You are a helpful assistant."); an exported checkpoint's manifest carries the one
    it was trained with. ``image``: the image part, ``{"type": "image"}`` by default (the
    processors fill it in); a vLLM server gets an ``image_url`` part instead.
    """
    messages: list[dict[str, object]] = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    image_part = image if image is not None else {"type": "image"}
    messages.append(
        {"role": "user", "content": [image_part, {"type": "text", "text": instruction}]}
    )
    return messages


def build_messages(
    question: str, spec: PromptSpec, *, system: str | None = None
) -> list[dict[str, object]]:
    """The envelope of ``question`` rendered in ``spec``'s mode (TRL's conversational prompt)."""
    return chat_messages(build_instruction(question, spec), system=system)
