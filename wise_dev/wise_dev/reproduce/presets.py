"""The reproduction's presets: one recipe, three scales. Every GRPO config of a preset runs with
the same steps, seed, data and optimiser settings; only the shipped config differs."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from .vision_tower import VisionPretraining

TABLE_3 = ("seg_zero", "l1_exact", "l1_max", "wise")
TABLE_5 = ("order_d_think_think_answer", "order_think_d_think_answer", "order_d_think_answer_think")
TABLE_6 = ("no_distill", "wise_no_similarity", "wise_no_conciseness", "wise_no_indicator")


@dataclass(frozen=True)
class Grpo:
    steps: int
    prompts_per_step: int = 2
    generations: int = 4  # per prompt (TRL num_generations)
    learning_rate: float = 2e-5
    max_completion_length: int = 320
    logging_steps: int = 1
    # Everything else (beta, temperature, epsilon, loss type, entropy bonus, ...) is the shipped
    # config's: the recipe is scaled by these overrides only.


@dataclass(frozen=True)
class Preset:
    name: str
    scenes: dict[str, int]
    policy_size: str
    sft_epochs: float
    sft_batch: int
    sft_learning_rate: float
    segmenter_steps: int
    grpo: Grpo
    configs: tuple[str, ...]
    vision: VisionPretraining  # the tower's pretraining, before SFT
    # Extra SFT grounding scenes: {objects per scene: scenes} (run.Reproduction._write_grounding_scenes)
    grounding_scenes: dict[int, int]
    # Extra SFT grounding scenes whose request names one object only: {objects per scene: scenes}
    single_target_scenes: dict[int, int] = field(default_factory=dict)
    eval_batch: int = 16
    seed: int = 0
    frame: int = 168
    extra: dict[str, str] = field(default_factory=dict)

    def settings_of(self, stage: str) -> str:
        """The settings ``stage`` (``grpo:<config>`` counts as ``grpo``) is the first to read,
        as JSON: what its fingerprint covers of the preset (``STAGE_SETTINGS``)."""
        fields = STAGE_SETTINGS[stage.split(":")[0]]
        values = {f: getattr(self, f) for f in fields}
        return json.dumps(values, sort_keys=True, default=dataclasses.asdict)


# Which stage is the first to read each setting. A stage's fingerprint covers its own settings
# and, chained, every stage's before it, so a change reruns the stage that reads it first and
# everything after, and keeps what came before (a new GRPO learning rate keeps the 27-minute SFT).
STAGE_SETTINGS: dict[str, tuple[str, ...]] = {
    "scenes": ("scenes", "seed", "frame", "grounding_scenes", "single_target_scenes", "extra"),
    "init": ("policy_size", "vision"),
    "sft": ("sft_epochs", "sft_batch", "sft_learning_rate"),
    "segmenter": ("segmenter_steps",),
    "grpo": ("grpo",),
    "evaluate": ("eval_batch", "configs"),
}
NOT_SETTINGS = ("name",)  # names the run folder; no stage's output depends on it


DEFAULT = Preset(
    name="default",
    scenes={"train": 2000, "val": 100, "test": 200},
    policy_size="mid",
    sft_epochs=6.0,
    sft_batch=8,
    sft_learning_rate=1e-3,
    segmenter_steps=1500,
    grpo=Grpo(steps=60),
    configs=TABLE_3,
    vision=VisionPretraining(steps=400),
    grounding_scenes={1: 500, 2: 500},
    single_target_scenes={3: 1000},
)

# The other presets are the default recipe with what they change, and nothing else.
PRESETS: dict[str, Preset] = {
    "default": DEFAULT,
    "long": dataclasses.replace(DEFAULT, name="long", configs=TABLE_3 + TABLE_5 + TABLE_6),
    # A demo checkpoint's recipe (then python -m wise_dev.reproduce.pack --preset demo): the
    # default's with twice as many SFT epochs and only the WISE run; outside the 45-minute
    # budget, which is the table's (README, "Reproduction at CPU scale").
    "demo": dataclasses.replace(DEFAULT, name="demo", sft_epochs=12.0, configs=("wise",)),
    "quick": dataclasses.replace(
        DEFAULT,
        name="quick",
        scenes={"train": 400, "val": 20, "test": 40},
        sft_epochs=1.0,
        segmenter_steps=300,
        grpo=Grpo(steps=6),
    ),
    # The CI test of the whole pipeline: plumbing only (files, table shape, exports that load),
    # never a learning outcome.
    "ci": dataclasses.replace(
        DEFAULT,
        name="ci",
        scenes={"train": 16, "val": 4, "test": 4},
        policy_size="tiny",
        sft_epochs=1.0,
        segmenter_steps=2,
        grpo=Grpo(steps=1, max_completion_length=32),
        configs=("seg_zero", "wise"),
        eval_batch=4,
        vision=VisionPretraining(steps=2, scenes=16, held_out=4, batch_size=4),
        grounding_scenes={1: 2, 2: 2},
        single_target_scenes={3: 2},
    ),
}
