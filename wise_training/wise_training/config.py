"""Training configuration: YAML files (one per paper row, ``configs/``) plus dotted overrides.

A config may name a ``base`` YAML (relative to itself) and override parts of it, so every
ablation is its parent plus the one switch the paper changes. ``model``, ``data``, ``prompt``
and ``reward`` are WISE's own sections, checked here; ``trainer`` holds ``trl.GRPOConfig``
options by their TRL names, converted and checked by TRL's own parser (``trainer_args``).
Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wise_perception.core.prompts import DEFAULT_BREVITY, PromptMode, spec_for

from .rewards import DEFAULT_SENTENCE_MODEL, RewardConfig
from .trainer_args import grpo_config, parse_trainer

CONFIG_DIR = Path(__file__).parent / "configs"
MAX_BASE_DEPTH = 8
# The resolved configuration, saved next to the trained weights and read by the export.
TRAINING_CONFIG_NAME = "wise_training_config.json"


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key."""


@dataclass
class ModelSection:
    path: str = "Qwen/Qwen2.5-VL-7B-Instruct"  # §4 Implementation Details
    dtype: str = "bfloat16"
    attn_implementation: str | None = None  # e.g. "flash_attention_2" on GPU
    sentence_model: str = DEFAULT_SENTENCE_MODEL  # Eq. 6 (release: all-MiniLM-L6-v2)


@dataclass
class DataSection:
    train: str = "data/refCOCOg_2k_840"  # §4: 2,000-sample RefCOCOg subset (Seg-Zero's release)
    format: str = "auto"  # auto | segzero | jsonl
    limit: int | None = None
    policy_frame: int = 840  # released resize_size
    system_prompt: str = "You are a helpful assistant."  # release: verl config data.system_prompt


@dataclass
class PromptSection:
    mode: str = PromptMode.WISE_TRAIN.value
    brevity: str = DEFAULT_BREVITY


@dataclass
class TrainConfig:
    name: str = "wise"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    prompt: PromptSection = field(default_factory=PromptSection)
    reward: dict[str, Any] = field(default_factory=dict)  # RewardConfig fields
    trainer: dict[str, Any] = field(default_factory=dict)  # GRPOConfig options, typed by TRL

    @property
    def output_dir(self) -> Path:
        return Path(self.trainer["output_dir"])

    def reward_config(self) -> RewardConfig:
        """The reward section; its span order always follows the prompt mode, so the format
        reward and the prompt agree (Eq. 2, Table 5), and its frame the data's policy frame, so
        the pixel thresholds keep the release's meaning."""
        order = spec_for(self.prompt.mode, brevity=self.prompt.brevity).order
        try:
            reward = RewardConfig(
                **{"order": order, "frame": self.data.policy_frame, **self.reward}
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"reward: {exc}") from exc
        if reward.order != order:
            raise ConfigError(
                f"reward.order {list(reward.order)} contradicts prompt mode {self.prompt.mode}"
            )
        if reward.frame != self.data.policy_frame:
            raise ConfigError(
                f"reward.frame {reward.frame} contradicts data.policy_frame {self.data.policy_frame}"
            )
        return reward

    def grpo_config(self) -> Any:
        """``trl.GRPOConfig`` of the trainer section, with the reward weights the reward
        section implies (one per TRL reward function, in ``WiseRewards``' order)."""
        values = {**self.trainer, "reward_weights": self.reward_config().reward_weights()}
        try:
            return grpo_config(values)
        except ValueError as exc:  # GRPOConfig's own checks of the whole
            raise ConfigError(f"trainer: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"model": ModelSection, "data": DataSection, "prompt": PromptSection}
# Derived from the reward section (TrainConfig.grpo_config), never set by hand.
DERIVED_TRAINER_KEYS = ("reward_weights",)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path, depth: int = 0) -> dict[str, Any]:
    if depth > MAX_BASE_DEPTH:
        raise ConfigError(f"{path}: 'base' chain deeper than {MAX_BASE_DEPTH}")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping")
    base = data.pop("base", None)
    if base:
        data = _merge(_read_yaml((path.parent / base).resolve(), depth + 1), data)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``trainer.learning_rate=2e-6`` -> (["trainer", "learning_rate"], 2e-6)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"override {text!r} has no key")
    return path, yaml.safe_load(raw) if raw.strip() else None


def _coerce(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """YAML 1.1 reads ``2e-6`` as a string: convert numbers by the field's declared type."""
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    out = dict(values)
    for key, value in values.items():
        kind = types[key].split(" | ")[0]
        if isinstance(value, str) and kind in ("float", "int"):
            try:
                out[key] = float(value) if kind == "float" else int(value)
            except ValueError as exc:
                raise ConfigError(f"{cls.__name__}.{key} must be a number, got {value!r}") from exc
    return out


def _trainer_section(values: Any) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError("'trainer' must be a mapping")
    derived = sorted(set(values) & set(DERIVED_TRAINER_KEYS))
    if derived:
        raise ConfigError(
            f"trainer.{derived[0]} follows from the reward section (every summed term weight 1, "
            "monitors 0); change the reward switches instead"
        )
    if not values.get("output_dir"):
        raise ConfigError("trainer.output_dir is required (checkpoints, metrics.jsonl, model card)")
    try:
        return parse_trainer(values)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def build_config(data: dict[str, Any]) -> TrainConfig:
    unknown = sorted(set(data) - {"name", "reward", "trainer", *_SECTIONS})
    if unknown:
        raise ConfigError(
            f"unknown top-level keys {unknown}; known: name, reward, trainer, {', '.join(_SECTIONS)}"
        )
    kwargs: dict[str, Any] = {
        "name": str(data.get("name", "wise")),
        "reward": dict(data.get("reward") or {}),
        "trainer": _trainer_section(data.get("trainer") or {}),
    }
    for section, cls in _SECTIONS.items():
        values = data.get(section) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"'{section}' must be a mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(values) - known)
        if bad:
            raise ConfigError(f"unknown keys in '{section}': {bad}; known: {sorted(known)}")
        kwargs[section] = cls(**_coerce(cls, values))
    config = TrainConfig(**kwargs)
    try:
        PromptMode(config.prompt.mode)
    except ValueError as exc:
        raise ConfigError(f"prompt.mode: {exc}") from exc
    config.reward_config()  # validates the reward switches against the prompt
    return config


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Load ``path`` (a file, or a name in ``configs/``), apply ``section.key=value`` overrides."""
    candidate = Path(path)
    if not candidate.exists():
        if (CONFIG_DIR / f"{path}.yaml").is_file():
            candidate = CONFIG_DIR / f"{path}.yaml"
        else:
            names = ", ".join(named_configs())
            if candidate.suffix in (".yaml", ".yml") or len(candidate.parts) > 1:
                raise ConfigError(f"config file {path} does not exist; named configs: {names}")
            raise ConfigError(f"unknown config {str(path)!r}; named configs: {names}")
    data = _read_yaml(candidate.resolve())
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {key} is not a section")
        node[keys[-1]] = value
    return build_config(data)


def named_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
