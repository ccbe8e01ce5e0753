"""The parser: tolerant of whitespace and fences, strict about structure, never raises."""

import pytest

from wise_perception.core.answer import FailureReason, ParsedAnswer, ParseFailure, parse_completion

GOOD_JSON = '{"bbox": [10,100,200,210], "points_1": [30,110], "points_2": [35,180]}'


def test_parses_spans_box_and_points():
    text = f"<think> the mug left of the plate </think>\n<answer>{GOOD_JSON}</answer><d_think> long </d_think>"
    result = parse_completion(text)
    assert isinstance(result, ParsedAnswer) and result.ok
    assert result.think == "the mug left of the plate"
    assert result.d_think == "long"
    (obj,) = result.objects
    assert obj.box == (10, 100, 200, 210)
    assert obj.points == ((30, 110), (35, 180))


@pytest.mark.parametrize(
    "answer",
    [
        f"```json\n{GOOD_JSON}\n```",
        f"\n\n   {GOOD_JSON}   \n",
        f"```\n{GOOD_JSON}```",
        f"here it is: {GOOD_JSON} done",  # released fallback: first flat {...}
    ],
)
def test_tolerates_whitespace_fences_and_chatter(answer):
    result = parse_completion(f"<think>x</think><answer>{answer}</answer>")
    assert result.ok, result


def test_multi_object_schema():
    text = '<think>two</think><answer>[{"bbox_2d": [1,2,30,40], "point_2d": [5,6]}, {"bbox_2d": [50,50,60,70]}]</answer>'
    result = parse_completion(text, schema="multi")
    assert result.ok
    assert [o.box for o in result.objects] == [(1, 2, 30, 40), (50, 50, 60, 70)]
    assert result.objects[0].points == ((5, 6),)
    assert result.objects[1].points == ()
    # A multi deployment still accepts the paper's single-object answers.
    assert parse_completion(f"<answer>{GOOD_JSON}</answer>", schema="multi").ok


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", FailureReason.EMPTY),
        ("   \n", FailureReason.EMPTY),
        (None, FailureReason.EMPTY),
        (12, FailureReason.EMPTY),
        ("x" * 40_000, FailureReason.TOO_LONG),
        ("<think>only thinking</think>", FailureReason.NO_ANSWER),
        ("<answer>unterminated", FailureReason.NO_ANSWER),
        ("<answer>not json</answer>", FailureReason.BAD_JSON),
        ('<answer>{"bbox": [1,2,3,4], "points_1": [1,2]</answer>', FailureReason.BAD_JSON),
        ('<answer>{"bbox": [1,2,3,4], "points_1": [1,2]}</answer>', FailureReason.BAD_SCHEMA),
        ("<answer>[1, 2, 3]</answer>", FailureReason.BAD_SCHEMA),
        (
            '<answer>{"bbox": [1,2,3], "points_1": [1,2], "points_2": [1,2]}</answer>',
            FailureReason.BAD_BOX,
        ),
        (
            '<answer>{"bbox": [1,2,"a",4], "points_1": [1,2], "points_2": [1,2]}</answer>',
            FailureReason.BAD_BOX,
        ),
        (
            '<answer>{"bbox": [1,2,NaN,4], "points_1": [1,2], "points_2": [1,2]}</answer>',
            FailureReason.BAD_BOX,
        ),
        (
            '<answer>{"bbox": [1,2,true,4], "points_1": [1,2], "points_2": [1,2]}</answer>',
            FailureReason.BAD_BOX,
        ),
        (
            '<answer>{"bbox": [50,2,10,4], "points_1": [1,2], "points_2": [1,2]}</answer>',
            FailureReason.BAD_BOX,
        ),
        (
            '<answer>{"bbox": [1,2,1e9,4], "points_1": [1,2], "points_2": [1,2]}</answer>',
            FailureReason.BAD_BOX,
        ),
        (
            '<answer>{"bbox": [1,2,3,4], "points_1": [1], "points_2": [1,2]}</answer>',
            FailureReason.BAD_POINT,
        ),
        (
            '<answer>{"bbox": [1,2,3,4], "points_1": [1,"b"], "points_2": [1,2]}</answer>',
            FailureReason.BAD_POINT,
        ),
        ("<answer>[]</answer>", FailureReason.NO_OBJECTS),
    ],
)
def test_every_failure_mode_is_a_typed_failure(text, reason):
    schema = "multi" if text == "<answer>[]</answer>" else "single"
    result = parse_completion(text, schema=schema)
    assert isinstance(result, ParseFailure)
    assert result.reason is reason, result
    assert not result.ok
    assert result.message().startswith(reason.value)


def test_failure_keeps_the_rationale_for_reporting():
    result = parse_completion("<think> I looked everywhere </think><answer>nope</answer>")
    assert isinstance(result, ParseFailure)
    assert result.think == "I looked everywhere"


def test_deeply_nested_json_does_not_raise():
    result = parse_completion("<answer>" + "[" * 100_00 + "]" * 100_00 + "</answer>")
    assert isinstance(result, ParseFailure)


def test_multi_object_failures():
    assert (
        parse_completion('<answer>[{"box": [1,2,3,4]}]</answer>', schema="multi").reason
        is FailureReason.BAD_SCHEMA
    )
    bad_point = parse_completion(
        '<answer>[{"bbox_2d": [1,2,3,4], "point_2d": [1]}]</answer>', schema="multi"
    )
    assert bad_point.reason is FailureReason.BAD_POINT
    assert (
        parse_completion('<answer>"text"</answer>', schema="multi").reason
        is FailureReason.BAD_SCHEMA
    )


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("1" + "0" * 400, FailureReason.BAD_BOX),  # 10**400: float() would overflow
        ("-" + "9" * 1000, FailureReason.BAD_BOX),
        ("1" * 5000, FailureReason.BAD_JSON),  # over Python's 4,300-digit int parsing limit
        ("1e400", FailureReason.BAD_BOX),  # a float literal that json reads as inf
    ],
)
def test_huge_numbers_are_typed_failures_not_exceptions(number, reason):
    text = (
        f'<think> x </think><answer>{{"bbox": [{number},1,2,3], '
        '"points_1": [1,1], "points_2": [2,2]}</answer>'
    )
    result = parse_completion(text)
    assert isinstance(result, ParseFailure) and result.reason is reason
    assert len(result.message()) < 400  # the message names the problem, not the number
    points = text.replace(f"[{number},1,2,3]", "[0,1,2,3]").replace("[1,1]", f"[{number},1]")
    assert isinstance(parse_completion(points), ParseFailure)


def test_huge_numbers_do_not_break_a_reward_step():
    from wise_training.rewards import RewardConfig, WiseRewards

    rewards = WiseRewards(RewardConfig(distill=False))
    bomb = (
        '<think> x </think><answer>{"bbox": [' + "1" * 5000 + ',1,2,3], "points_1": [1,1], '
        '"points_2": [2,2]}</answer>'
    )
    scores = [f(completions=[bomb], gt_box=[[0, 0, 9, 9]]) for f in rewards.reward_functions()]
    assert all(s == [0.0] for s in scores[1:])  # json/iou/l1/points: nothing earned
