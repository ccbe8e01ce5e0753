"""Training configuration: YAML files (one per paper row, ``configs/``) plus dotted overrides.

A config may name a ``base`` YAML (relative to itself) and override parts of it, so every
ablation is its parent plus the one switch the paper changes. Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wise_perception.core.prompts import DEFAULT_BREVITY, PromptMode

from .rewards import DEFAULT_SENTENCE_MODEL, RewardConfig

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
class TrainerSection:
    """Passed to ``trl.GRPOConfig``; defaults from §4 and the release (seg_zero_7b.yaml)."""

    output_dir: str = "outputs/wise"
    learning_rate: float = 1.0e-6  # §4 / release optim.lr
    weight_decay: float = 0.01  # §4 AdamW weight decay
    # Global batch: 2 completions x 8 GPUs x 8 accumulation = 128 = 16 prompts x 8 generations
    # per optimizer step (§4 "total batch size of 16"; release rollout_batch_size 16, n 8).
    per_device_train_batch_size: int = 2  # release micro_batch_size_per_device_for_experience
    gradient_accumulation_steps: int = 8
    num_generations: int = 8  # release rollout.n
    max_completion_length: int = 1300  # release max_response_length (prompt: 1300, no TRL knob)
    temperature: float = 1.0  # release rollout.temperature
    beta: float = 5.0e-3  # release kl_loss_coef; TRL's KL is the k3 estimator = verl low_var_kl
    epsilon: float = 0.2  # PPO clip ratio (verl default clip_ratio)
    entropy_coef: float = 1.0e-3  # verl entropy_coeff, an entropy bonus as in TRL
    loss_type: str = "dapo"  # verl token-mean aggregation over the batch
    max_grad_norm: float = 1.0  # release max_grad_norm
    num_train_epochs: float = 1.0  # release total_episodes: 1
    max_steps: int = -1
    logging_steps: int = 1
    save_steps: int = 50  # release save_freq
    save_total_limit: int | None = 3
    seed: int = 42  # release data.seed
    bf16: bool = True
    gradient_checkpointing: bool = True  # release enable_gradient_checkpointing
    report_to: str = "tensorboard"
    use_cpu: bool = False
    use_vllm: bool = False
    vllm_mode: str = "colocate"  # or "server" (trl vllm-serve)
    vllm_gpu_memory_utilization: float = 0.5  # release rollout.gpu_memory_utilization
    deepspeed: str | None = None
    dataloader_num_workers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # any other GRPOConfig argument


@dataclass
class TrainConfig:
    name: str = "wise"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    prompt: PromptSection = field(default_factory=PromptSection)
    reward: dict[str, Any] = field(default_factory=dict)  # RewardConfig fields
    trainer: TrainerSection = field(default_factory=TrainerSection)

    def reward_config(self) -> RewardConfig:
        try:
            return RewardConfig(**self.reward)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"reward: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {
    "model": ModelSection,
    "data": DataSection,
    "prompt": PromptSection,
    "trainer": TrainerSection,
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "extra":
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


def build_config(data: dict[str, Any]) -> TrainConfig:
    unknown = sorted(set(data) - {"name", "reward", *_SECTIONS})
    if unknown:
        raise ConfigError(
            f"unknown top-level keys {unknown}; known: name, reward, {', '.join(_SECTIONS)}"
        )
    kwargs: dict[str, Any] = {
        "name": str(data.get("name", "wise")),
        "reward": dict(data.get("reward") or {}),
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
    config.reward_config()  # validates the reward switches
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
