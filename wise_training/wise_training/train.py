"""GRPO training of the WISE policy on TRL's GRPOTrainer (paper §3.2, §4).

    python -m wise_training.train --config wise                       # a named config (configs/)
    python -m wise_training.train --config my.yaml trainer.learning_rate=2e-6 data.limit=100
    accelerate launch --config_file wise_training/wise_training/accelerate/zero3.yaml \\
        -m wise_training.train --config wise trainer.deepspeed=wise_training/wise_training/deepspeed/zero3.json

The reward functions (``wise_training.rewards``) are one per term; TRL logs each as
``rewards/<term>_reward/mean`` and ``/std`` (TensorBoard tags ``train/rewards/<term>_reward/mean``),
and zero-weight monitors add ``think_tokens``, ``d_think_tokens`` and ``distill_earned`` (share of
completions that earned R_distill). The sentence model of Eq. 6 is loaded before anything else,
so a run that cannot have it stops at start-up. The run folder gets a WISE model card.
The frozen SAM2 is not part of training (§3.1): rewards are computed on the box and points.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from wise_perception.core.prompts import spec_for
from wise_perception.policy.loader import CheckpointError, load_model

from .callbacks import JsonlLogCallback, use_readable_console
from .config import TRAINING_CONFIG_NAME, ConfigError, TrainConfig, load_config, named_configs
from .data import DataReport, load_training_samples
from .model_card import model_card_text, reward_names_of, write_model_card
from .processor import load_processor
from .rewards import RewardConfig, SentenceModelError, SentenceSimilarity, WiseRewards
from .tables import DatasetError
from .trainer_args import trainer_help

LOG = logging.getLogger("wise_training.train")


def load_trainable_policy(config: TrainConfig) -> tuple[Any, Any]:
    """Model and processor through the loader the export uses (safetensors, no remote code)."""
    processor = load_processor(config.model.path)
    processor.tokenizer.padding_side = "left"  # GRPO generates after the prompt
    model = load_model(
        config.model.path,
        dtype=config.model.dtype,
        attn_implementation=config.model.attn_implementation,
    )
    return model, processor


def check_model_source(path: str) -> None:
    """A local ``model.path`` that does not exist is named at once, before anything loads (a
    hub id is left to the loader)."""
    from wise_perception.sources import is_url, looks_local

    if is_url(path):
        raise ConfigError(f"model.path {path}: training needs a local folder or a hub id")
    if looks_local(path) and not Path(path).expanduser().exists():
        raise ConfigError(f"model.path {path} does not exist")


def load_sentence_model(config: TrainConfig, reward_cfg: RewardConfig) -> SentenceSimilarity | None:
    """Eq. 6's sentence model, loaded now (before data, policy and step 1), or None when the
    configuration has no similarity term. Raises ``ConfigError`` with what to install or set."""
    if not (reward_cfg.distill and reward_cfg.use_similarity):
        return None
    try:
        return SentenceSimilarity(config.model.sentence_model).load()
    except SentenceModelError as exc:
        raise ConfigError(f"model.sentence_model: {exc}") from exc


def _trainer_class() -> type:
    """TRL's GRPOTrainer with the WISE model card (TRL's names no local base model)."""
    from trl import GRPOTrainer

    class WiseGRPOTrainer(GRPOTrainer):
        wise_config: TrainConfig
        wise_reward_config: RewardConfig

        def wise_model_card(self) -> str:
            return model_card_text(
                self.wise_config,
                self.wise_reward_config,
                reward_names_of(self),
                list(self.args.reward_weights),
                global_step=self.state.global_step,
            )

        def create_model_card(
            self,
            model_name: str | None = None,
            dataset_name: str | None = None,
            tags: str | list[str] | None = None,
        ) -> None:
            if self.is_world_process_zero():
                write_model_card(self.args.output_dir, self.wise_model_card())

    return WiseGRPOTrainer


def build_trainer(
    config: TrainConfig,
    *,
    samples: list[dict[str, Any]] | None = None,
    similarity: Any = None,
    callbacks: list[Any] | None = None,
) -> tuple[Any, DataReport]:
    """A ready GRPOTrainer and the data report. ``samples`` replaces ``data.train`` (tests).

    The sentence model is loaded first, so a run that cannot have it fails before it reads
    data or loads the policy, not at the first correct completion."""
    import datasets

    reward_cfg = config.reward_config()
    check_model_source(config.model.path)
    needs_similarity = reward_cfg.distill and reward_cfg.use_similarity
    if needs_similarity and similarity is None:
        similarity = load_sentence_model(config, reward_cfg)
    spec = spec_for(config.prompt.mode, brevity=config.prompt.brevity)
    report = DataReport(loaded=len(samples or []))
    if samples is None:
        samples, report = load_training_samples(
            config.data.train,
            spec,
            fmt=config.data.format,
            policy_frame=config.data.policy_frame,
            limit=config.data.limit,
            system_prompt=config.data.system_prompt,
        )
    if not samples:
        raise ConfigError(f"no usable training samples ({report.summary()})")
    args = (
        config.grpo_config()
    )  # TRL's checks of the whole (bf16 needs a GPU...), before the policy
    model, processor = load_trainable_policy(config)
    rewards = WiseRewards(reward_cfg, processor.tokenizer, similarity if needs_similarity else None)
    # The order of RewardConfig.reward_weights, which GRPOConfig already holds.
    reward_funcs = rewards.reward_functions() + rewards.metric_functions()
    trainer = _trainer_class()(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=datasets.Dataset.from_list(samples),
        processing_class=processor,
        callbacks=[
            JsonlLogCallback(config.output_dir / "metrics.jsonl"),
            *(callbacks or []),
        ],
    )
    use_readable_console(trainer)
    trainer.wise_config, trainer.wise_reward_config = config, reward_cfg
    trainer.wise_rewards = rewards
    return trainer, report


def save_final(trainer: Any, config: TrainConfig) -> Path:
    """``output_dir/final``: HF folder (safetensors) + processor + the resolved training config
    + the WISE model card (also written to ``output_dir``)."""
    final = config.output_dir / "final"
    trainer.save_model(str(final))
    trainer.processing_class.save_pretrained(str(final))
    (final / TRAINING_CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2, default=str))
    if trainer.is_world_process_zero():
        card = trainer.wise_model_card()
        write_model_card(final, card)
        write_model_card(config.output_dir, card)
    return final


def describe_distribution(trainer: Any) -> str:
    """E.g. ``DEEPSPEED ZeRO-2, 1 process(es)``: what the run will actually use."""
    state = trainer.accelerator.state
    text = f"{state.distributed_type.value}"
    plugin = getattr(state, "deepspeed_plugin", None)
    if plugin is not None:
        text += f" ZeRO-{plugin.zero_stage}"
    return f"{text}, {state.num_processes} process(es), device {state.device}"


def resolve_resume(value: str | None, output_dir: Path) -> str | bool | None:
    if value is None:
        return None
    if value == "latest":
        checkpoints = sorted(
            output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])
        )
        if not checkpoints:
            raise ConfigError(f"--resume latest: no checkpoint-* folder in {output_dir}")
        return str(checkpoints[-1])
    if not Path(value).is_dir():
        raise ConfigError(f"--resume {value}: no such checkpoint folder")
    return value


class TrainerHelp(argparse.Action):
    """``--trainer-help``: like ``--help``, it needs no other argument."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(trainer_help())
        parser.exit()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m wise_training.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", required=True, help=f"YAML file or a name: {', '.join(named_configs())}"
    )
    parser.add_argument(
        "overrides", nargs="*", help="section.key=value, e.g. trainer.learning_rate=2e-6"
    )
    parser.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    parser.add_argument(
        "--trainer-help",
        action=TrainerHelp,
        help="list every trainer.KEY (trl.GRPOConfig options) with TRL's help and exit",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    # One progress bar for the run (ReadableProgressCallback), not one per loaded weight file.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        config = load_config(args.config, args.overrides)
        if args.print_config:
            print(yaml.safe_dump(config.to_dict(), sort_keys=False))
            return 0
        resume = resolve_resume(args.resume, config.output_dir)
        trainer, report = build_trainer(config)
    except (ConfigError, CheckpointError, DatasetError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    LOG.info("config %s: %s", config.name, report.summary())
    LOG.info("distributed: %s", describe_distribution(trainer))
    trainer.train(resume_from_checkpoint=resume)
    final = save_final(trainer, config)
    LOG.info(
        "saved %s; export it with: python -m wise_training.export --checkpoint %s --out <dir>",
        final,
        final,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
