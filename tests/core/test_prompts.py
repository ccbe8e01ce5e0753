"""The prompt contract: every mode renders from one template with the released wording."""

import pytest

from wise_perception.core.prompts import (
    MAX_QUESTION_CHARS,
    AnswerSchema,
    PromptMode,
    build_instruction,
    build_messages,
    chat_messages,
    check_question,
    normalize_question,
    spec_for,
)

# Verbatim from the released evaluation.py ("default" and "one_sentence") and rl_dataset.py.
RELEASED_WISE = (
    "Please find 'the red mug' with bbox and points."
    "Compare the difference between objects and find the most closely matched one."
    "Output the streamlined thinking process in <think> </think> and final answer in <answer> </answer> tags."
    "Output the one bbox and points of two largest inscribed circles inside the interested object in JSON format."
    "i.e., <think> streamlined thinking process here </think>"
    '<answer>{"bbox": [10,100,200,210], "points_1": [30,110], "points_2": [35,180]}</answer>'
)
RELEASED_TRAIN = (
    "Please find 'the red mug' with bbox and points."
    "Compare the difference between objects and find the most closely matched one."
    "Output the detailed thinking process in <d_think> </d_think>, the streamlined thinking process in "
    "<think> </think> and final answer in <answer> </answer> tags."
    "Output the one bbox and points of two largest inscribed circles inside the interested object in JSON format."
    "i.e., <think> streamlined thinking process here </think>"
    '<answer>{"bbox": [10,100,200,210], "points_1": [30,110], "points_2": [35,180]}</answer>'
    "<d_think> detailed thinking process here </d_think>"
)
SEG_ZERO = (
    "Please find 'the red mug' with bbox and points."
    "Compare the difference between objects and find the most closely matched one."
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    "Output the one bbox and points of two largest inscribed circles inside the interested object in JSON format."
    "i.e., <think> thinking process here </think>"
    # Seg-Zero quotes its example answer with ' (its evaluation.py: Answer="{'bbox': ...}").
    "<answer>{'bbox': [10,100,200,210], 'points_1': [30,110], 'points_2': [35,180]}</answer>"
)


def test_released_wordings_are_reproduced_exactly():
    assert build_instruction("The red mug.", spec_for("wise")) == RELEASED_WISE
    assert build_instruction("The red mug.", spec_for("wise_train")) == RELEASED_TRAIN
    assert build_instruction("The red mug.", spec_for("seg_zero")) == SEG_ZERO
    # WISE-F sends the training prompt at inference (released "d_think-infer").
    assert build_instruction("The red mug.", spec_for("wise_f")) == RELEASED_TRAIN


def test_wise_s_injects_the_brevity_instruction_into_the_think_example():
    text = build_instruction("the red mug", spec_for("wise_s"))
    assert text == RELEASED_WISE.replace(
        "streamlined thinking process here </think>",
        "streamlined thinking process here (one sentence) </think>",
    )
    custom = build_instruction("the red mug", spec_for("wise_s", brevity="be concise"))
    assert "<think> streamlined thinking process here (be concise) </think>" in custom
    # The brevity instruction belongs to wise_s only.
    assert "(be concise)" not in build_instruction("x", spec_for("wise", brevity="be concise"))
    with pytest.raises(ValueError, match="brevity"):
        spec_for("wise_s", brevity="  ")


@pytest.mark.parametrize(
    ("mode", "order"),
    [
        ("order_d_think_think_answer", ["<d_think>", "<think>", "<answer>"]),
        ("order_think_d_think_answer", ["<think>", "<d_think>", "<answer>"]),
        ("order_d_think_answer_think", ["<d_think>", "<answer>", "<think>"]),
        ("wise_train", ["<think>", "<answer>", "<d_think>"]),
    ],
)
def test_order_ablations_teach_the_order_through_the_example(mode, order):
    text = build_instruction("a cup", spec_for(mode))
    example = text.split("i.e., ", 1)[1]
    positions = [example.index(tag) for tag in order]
    assert positions == sorted(positions)


def test_no_concise_mode_matches_released_no_c_think():
    text = build_instruction("a cup", spec_for("no_concise"))
    assert "the detailed thinking process in <d_think> </d_think> and the final answer" in text
    assert "<think>" not in text
    assert text.endswith("<d_think> detailed thinking process here </d_think>")


def test_multi_object_schema_uses_visionreasoner_wording():
    text = build_instruction("all mugs", spec_for("wise_s", schema=AnswerSchema.MULTI))
    assert text.startswith('Please find "all mugs" with bboxs and points.')
    assert '"bbox_2d": [10,100,200,210], "point_2d": [30,110]' in text


def test_question_is_normalised_like_the_release():
    # The release sends question.lower().strip("."): nothing else is changed.
    for raw in ("The Red MUG.", "  The  Red MUG. ", "...odd...", "two\nlines\tand a tab."):
        assert normalize_question(raw) == raw.lower().strip(".")
    assert normalize_question("  The  Red MUG. ") == "  the  red mug. "


def test_control_characters_are_dropped():
    # Safety only: a terminal escape or NUL byte must not reach prompts and logs.
    assert normalize_question("the\x00 red\x1b[31m cup\x7f.") == "the red[31m cup"
    with pytest.raises(ValueError, match="empty"):
        normalize_question("\x00\x01")


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_commands_are_rejected(bad):
    with pytest.raises(ValueError, match="empty"):
        normalize_question(bad)


def test_huge_and_non_text_commands_are_rejected():
    with pytest.raises(ValueError, match="limit"):
        normalize_question("a" * 10_000)
    assert normalize_question("a" * MAX_QUESTION_CHARS)
    with pytest.raises(ValueError, match="text"):
        normalize_question(None)  # type: ignore[arg-type]


def test_a_question_checked_once_is_quoted_as_it_is():
    question = check_question("The Red Mug.", 1000)
    assert (question.sent, question.text, question.max_chars) == (
        "The Red Mug.",
        "the red mug",
        1000,
    )
    spec = spec_for("wise")
    assert build_instruction(question, spec) == build_instruction("The Red Mug.", spec)
    # checked against a looser limit than this one: checked again, here
    with pytest.raises(ValueError, match="the limit is 5"):
        build_instruction(question, spec, max_chars=5)
    with pytest.raises(ValueError, match="empty"):
        check_question("  ", 1000)


def test_messages_put_the_image_before_the_instruction():
    messages = build_messages("cup", spec_for("wise_s"))
    assert messages[-1]["role"] == "user"
    content = messages[-1]["content"]
    assert content[0] == {"type": "image"}
    assert content[1]["type"] == "text"
    assert build_messages("cup", spec_for("wise_s"), system="sys")[0]["role"] == "system"


def test_every_mode_renders():
    for mode in PromptMode:
        assert "<answer>" in build_instruction("cup", spec_for(mode))


def test_one_envelope_for_training_and_every_backend():
    """build_messages (training, TRL) is chat_messages around the rendered instruction, the
    envelope the backends send too; the vLLM server's image part replaces the placeholder."""
    spec = spec_for("wise_s")
    instruction = build_instruction("cup", spec)
    assert build_messages("cup", spec, system="sys") == chat_messages(instruction, system="sys")
    assert build_messages("cup", spec) == chat_messages(instruction, system="")
    url = {"type": "image_url", "image_url": {"url": "data:,"}}
    served = chat_messages(instruction, image=url)
    assert served[-1]["content"] == [url, {"type": "text", "text": instruction}]
