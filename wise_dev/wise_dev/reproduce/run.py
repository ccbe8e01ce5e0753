"""``make reproduce``: the paper's §4 at CPU scale, end to end, through the product's own code.

    python -m wise_dev.reproduce                       # default preset, into .build/reproduce
    python -m wise_dev.reproduce --preset quick        # the same stages, small (minutes)
    python -m wise_dev.reproduce --preset long         # + Table 5 orders and Table 6 ablations

Stages (each resumable: a finished stage is kept when its settings did not change):

1. scenes: the synthetic world (``wise_training.scenes``), train / val / test, and the few-object
   scenes of SFT's extra grounding examples;
2. tokenizer + random policy (``world_tokenizer``, ``base_policy.build_policy``), its vision tower
   pretrained (``vision_tower``);
3. base policy: SFT with TRL's ``SFTTrainer`` on written chains (``chains``);
4. segmenter: a tiny SAM2 trained on the scenes, then frozen (``segmenter``);
5. GRPO, one stage per shipped config (``wise_training.train``'s command line, in process, with
   overrides only: same steps, seed, data and optimiser for every config), then its export
   (``wise_training.export``);
6. evaluation: ONE run of the product evaluator (``wise_training.evaluate``) over the held-out
   ``test`` split with every row, the rule baselines included; ``table.md``, ``tokens.png``;
7. training curves of every run (``wise_training.curves``) and the summary.

``python -m wise_dev.reproduce.demo`` runs ``wise-segment`` with the WISE export on a fresh scene.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from . import help_text
from .presets import PRESETS, TABLE_3, Preset
from .stages import Stage, StageRunner, clock, fingerprint

DEFAULT_OUT = Path(".build/reproduce")
SYSTEM_PROMPT = "You are a helpful assistant."  # the shipped configs' data.system_prompt
GROUNDING_SEED = 7  # + the preset's seed: the few-object grounding scenes' (never a split's)
SFT_RECORD = "sft_config.json"  # what the base policy was trained with (its export's manifest)
MAX_NEW_TOKENS = 384  # WISE-F writes <think>, <answer> and <d_think>
# The tiny SAM2's input: 128 px (scenes are 168): measured on val scenes prompted with the true
# box and points, 1,500 steps give mask IoU 0.92 at 128 px in 4.5 minutes; 256 px costs 4x more
# per step and reached 0.32 after 600.
SAM2_SIZE = 128
BASELINES = ("largest", "named")
# Inference modes per policy (paper Table 3 rows; Table 5/6 rows are read in WISE mode, as the
# paper's "Ours" rows there are Table 3's WISE numbers).
SEG_ZERO_FAMILY = ("seg_zero", "l1_exact", "l1_max")


def modes_of(config: str) -> tuple[str, ...]:
    if config == "seg_zero":
        return ("seg_zero", "wise_s")  # wise_s on the Seg-Zero policy: "Seg-Zero-S" (Table 8)
    if config in SEG_ZERO_FAMILY:
        return ("seg_zero",)
    if config == "wise":
        return ("wise", "wise_s", "wise_f")
    return ("wise",)


def export_mode(config: str) -> str:
    return "seg_zero" if config in SEG_ZERO_FAMILY else "wise_s"


class Reproduction:
    def __init__(self, preset: Preset, out: Path, threads: int) -> None:
        self.preset = preset
        self.out = out.resolve()
        self.threads = threads
        self.scenes = self.out / "scenes"
        self.tokenizer_dir = self.out / "init"
        self.base = self.out / "base" / "policy"
        self.sam2 = self.out / "sam2"
        self.runs = self.out / "runs"
        self.exports = self.out / "exports"
        self.eval = self.out / "eval"

    # -------------------------------------------------------------------- stages

    def stages(self) -> list[Stage]:
        from wise_training import scenes

        from . import vision_tower
        from .base_policy import PIXEL_STD, SftSettings

        p = self.preset
        # What a stage's output depends on beyond its preset settings (a finished stage made
        # otherwise is redone): the world's floor, the processor's normalisation, the SFT defaults.
        world = f"floor {scenes.FLOOR} {scenes.FLOOR_STRIPES} {scenes.FLOOR_STRIPE_AMPLITUDE}"
        sft = json.dumps(dataclasses.asdict(SftSettings(0, 0, 0)), sort_keys=True)
        vision = (
            f"pixel std {PIXEL_STD}; vision labels {vision_tower.SEED} {vision_tower.MIN_COVER}"
        )
        stages = [
            Stage("scenes", "scenes: the synthetic world", self.make_scenes, "scenes", world),
            Stage(
                "init",
                "tokenizer, random-weight policy, vision tower pretrained",
                self.make_init,
                "init",
                vision,
            ),
            Stage("sft", "base policy: SFT (TRL SFTTrainer)", self.make_base, "base", sft),
            Stage("segmenter", "segmenter: tiny SAM2, then frozen", self.make_sam2, "sam2"),
        ]
        for config in p.configs:
            stages.append(
                Stage(
                    f"grpo:{config}",
                    f"GRPO {config} ({p.grpo.steps} steps)",
                    lambda folder, c=config: self.grpo(c, folder),
                    f"runs/{config}",
                    settings=config,
                )
            )
        stages.append(Stage("evaluate", "evaluation on test (one run)", self.evaluate, "eval"))
        for stage in stages:
            stage.settings = f"{p.settings_of(stage.name)} {stage.settings}"
        return stages

    def make_scenes(self, folder: Path) -> None:
        """The splits, and the train split cut in two: ``sft.jsonl`` (the base policy's) and
        ``rl.jsonl`` (GRPO's prompts, unseen in SFT; the same for every config)."""
        from tqdm import tqdm

        from wise_training.scenes import write_scenes

        p = self.preset
        total = sum(p.scenes.values())
        with tqdm(total=total, desc="scenes", unit="scene", dynamic_ncols=True) as bar:
            paths = write_scenes(
                folder,
                dict(p.scenes),
                seed=p.seed,
                size=p.frame,
                progress=lambda n: bar.update(n - bar.n),
            )
        lines = paths["train"].read_text(encoding="utf-8").splitlines(keepends=True)
        rl = p.grpo.steps * p.grpo.prompts_per_step
        if rl >= len(lines):
            raise ValueError(f"{len(lines)} train scenes leave none for SFT after {rl} for GRPO")
        (folder / "sft.jsonl").write_text("".join(lines[:-rl]), encoding="utf-8")
        (folder / "rl.jsonl").write_text("".join(lines[-rl:]), encoding="utf-8")
        self._write_grounding_scenes(folder)

    def _write_grounding_scenes(self, folder: Path) -> None:
        """Scenes for SFT's grounding examples only: of few objects, every one named
        (``Preset.grounding_scenes``), and of a few more with one named
        (``Preset.single_target_scenes``; the record's ``ask``). With few objects the box answer
        is learned before the lookup among many is, and a request for one object of several
        teaches the lookup by colour and shape (README, "Reproduction at CPU scale"). Their own
        seed, so the splits are unchanged."""
        import numpy as np
        from PIL import Image

        from wise_training.scenes import make_scene

        rng = np.random.default_rng(GROUNDING_SEED + self.preset.seed)
        (folder / "grounding").mkdir(exist_ok=True)
        lines = []
        plans = [
            (count, total, False) for count, total in sorted(self.preset.grounding_scenes.items())
        ]
        plans += [(c, n, True) for c, n in sorted(self.preset.single_target_scenes.items())]
        for count, total, single in plans:
            for _ in range(total):
                scene = make_scene(rng, self.preset.frame, object_count=count)
                while len({o.name for o in scene.objects}) < count:  # each one nameable
                    scene = make_scene(rng, self.preset.frame, object_count=count)
                image = f"grounding/{len(lines):05d}.png"
                Image.fromarray(scene.image).save(folder / image)
                record = {"image": image, "objects": [o.record() for o in scene.objects]}
                if single:
                    record["ask"] = int(rng.integers(count))
                lines.append(json.dumps(record) + "\n")
        (folder / "grounding.jsonl").write_text("".join(lines), encoding="utf-8")

    def _sft_examples(self) -> tuple[list[dict[str, Any]], list[Path]]:
        """Per SFT scene: a reasoning example (one of the SFT prompts) and a grounding one."""
        import numpy as np

        from wise_training.scenes import read_records

        from .chains import grounding_example, sft_example

        records = read_records(self.scenes / "sft.jsonl")
        rng = np.random.default_rng(self.preset.seed)
        examples = [sft_example(r, rng, SYSTEM_PROMPT) for r in records]
        examples += [grounding_example(r, SYSTEM_PROMPT, rng) for r in records]
        few = read_records(self.scenes / "grounding.jsonl")
        examples += [grounding_example(r, SYSTEM_PROMPT, rng) for r in few]
        images = [self.scenes / r["image"] for r in records]
        return examples, images + images + [self.scenes / r["image"] for r in few]

    def make_init(self, folder: Path) -> None:
        from wise_training.scenes import read_records

        from .base_policy import SIZES, build_policy
        from .chains import BREVITY_PHRASES, GROUNDING_REQUEST
        from .world_tokenizer import prompt_texts, train_tokenizer

        examples, _ = self._sft_examples()
        questions = [
            r["instruction"]
            for split in ("train", "val", "test")
            for r in read_records(self.scenes / f"{split}.jsonl")
        ]
        corpus = [e["completion"][0]["content"] for e in examples]
        # Every question's words (a real tokenizer knows every English word), and the prompt
        # contract's wording of every mode around a few of them.
        corpus += [*questions, *prompt_texts(questions[:200], BREVITY_PHRASES), GROUNDING_REQUEST]
        tokenizer = train_tokenizer(corpus)
        build_policy(
            folder,
            tokenizer,
            SIZES[self.preset.policy_size],
            self.preset.frame,
            seed=self.preset.seed,
        )
        print(f"    vocabulary {len(tokenizer)} tokens; policy {self._parameters(folder)}")
        self._pretrain_vision(folder)

    def _pretrain_vision(self, folder: Path) -> None:
        from .vision_tower import pretrain_vision

        settings = self.preset.vision
        with loss_bar(settings.steps, "vision") as progress:
            accuracy = pretrain_vision(folder, settings, self.preset.frame, progress=progress)
        readout = ", ".join(f"{name} {100 * value:.1f}%" for name, value in accuracy.items())
        print(f"    vision tower, held-out token accuracy: {readout}")

    @staticmethod
    def _parameters(folder: Path) -> str:
        from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

        config = AutoConfig.from_pretrained(folder)
        import torch

        with torch.device("meta"):
            model = Qwen2_5_VLForConditionalGeneration(config)
        return f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters"

    def make_base(self, folder: Path) -> None:
        from .base_policy import SftSettings, load_images, sft

        examples, paths = self._sft_examples()
        p = self.preset
        settings = SftSettings(p.sft_epochs, p.sft_batch, p.sft_learning_rate, seed=p.seed)
        sft(self.tokenizer_dir, examples, load_images(paths), folder, settings)
        from .chains import BRIEF, DETAILED, SEG_ZERO, SFT_MODES

        record = {
            "what": "stand-in base policy: random-weight Qwen2.5-VL + SFT (wise_dev.reproduce)",
            "policy_size": p.policy_size,
            "sft": dataclasses.asdict(settings),
            "examples": len(examples),
            "prompt_mix": dict(SFT_MODES),
            "verbosity": {"seg_zero": SEG_ZERO, "brief": BRIEF, "detailed": DETAILED},
            # where the export reads the chat envelope's system turn (as in a TrainConfig)
            "data": {"system_prompt": SYSTEM_PROMPT},
        }
        (folder / SFT_RECORD).write_text(
            json.dumps(record, indent=2, default=dataclasses.asdict) + "\n", encoding="utf-8"
        )

    def make_sam2(self, folder: Path) -> None:
        from wise_dev.tiny_models import build_tiny_sam2

        from .segmenter import SegmenterSettings, segmenter_iou, train_segmenter

        p = self.preset
        init = build_tiny_sam2(self.out / "sam2_init", seed=p.seed, image_size=SAM2_SIZE)
        with loss_bar(p.segmenter_steps, "SAM2") as progress:
            train_segmenter(
                init,
                folder,
                SegmenterSettings(p.segmenter_steps, seed=p.seed),
                scene_seed=p.seed,
                train_scenes=p.scenes["train"],
                progress=progress,
            )
        shutil.rmtree(init)
        count = min(p.scenes["val"], 50)
        iou = segmenter_iou(folder, p.seed, "val", count)
        print(f"    mask IoU with the true box and points (val, {count} scenes): {100 * iou:.1f}")

    def grpo_overrides(self, config: str, folder: Path) -> list[str]:
        g, p = self.preset.grpo, self.preset
        return [
            f"model.path={self.base}",
            "model.dtype=float32",
            f"data.train={self.scenes / 'rl.jsonl'}",
            "data.format=jsonl",
            f"data.policy_frame={p.frame}",
            f"trainer.output_dir={folder}",
            "trainer.use_cpu=true",
            "trainer.bf16=false",
            "trainer.gradient_checkpointing=false",
            f"trainer.per_device_train_batch_size={g.prompts_per_step * g.generations}",
            "trainer.gradient_accumulation_steps=1",
            f"trainer.num_generations={g.generations}",
            f"trainer.max_completion_length={g.max_completion_length}",
            f"trainer.max_steps={g.steps}",
            f"trainer.learning_rate={g.learning_rate}",
            f"trainer.logging_steps={g.logging_steps}",
            "trainer.save_strategy='no'",  # quoted: YAML reads a bare no as false
            f"trainer.seed={p.seed}",
            f"trainer.data_seed={p.seed}",
            "trainer.dataloader_num_workers=0",
            "trainer.report_to=tensorboard",
            "trainer.disable_tqdm=false",  # one bar, one readable line per step
        ]

    def grpo(self, config: str, folder: Path) -> None:
        from wise_training.train import main as train_main

        code = train_main(["--config", config, *self.grpo_overrides(config, folder)])
        if code:
            raise RuntimeError(f"GRPO {config} failed (exit {code})")
        self.export(folder / "final", self.exports / config, export_mode(config))

    def export(self, checkpoint: Path, out: Path, mode: str, **kwargs: Any) -> None:
        from wise_training.export import export

        export(
            checkpoint,
            out,
            mode=mode,
            segmenter=str(kwargs.pop("segmenter", self.sam2)),
            max_new_tokens=MAX_NEW_TOKENS,
            policy_frame=self.preset.frame,
            force=True,
            **kwargs,
        )

    def evaluate(self, folder: Path) -> None:
        from tqdm import tqdm

        from wise_training.evaluate import DatasetSpec, EvalConfig, PolicySpec, evaluate

        base_export = self.exports / "base"
        self.export(
            self.base,
            base_export,
            "seg_zero",
            training_config=None,
            base_model="random init + SFT (wise_dev.reproduce)",
        )
        policies = [PolicySpec("base", str(base_export), ("seg_zero",))]
        for config in self.preset.configs:
            policies.append(PolicySpec(config, str(self.exports / config), modes_of(config)))
        for kind in BASELINES:
            policies.append(PolicySpec(f"baseline:{kind}", f"baseline:{kind}", ("seg_zero",)))
        test = self.scenes / "test.jsonl"
        config = EvalConfig(
            policies=policies,
            datasets=[DatasetSpec("test", str(test), "jsonl")],
            out=folder,
            segmenter=str(self.sam2),
            batch_size=self.preset.eval_batch,
            max_new_tokens=MAX_NEW_TOKENS,
            device="cpu",
            dtype="float32",
        )
        total = sum(len(p.modes) for p in policies) * self.preset.scenes["test"]
        with tqdm(total=total, desc="evaluate", unit="sample", dynamic_ncols=True) as bar:
            evaluate(config, factory=lambda c, p: _counting(_pipeline(self, c, p), bar))
        runs = {c: self.runs / c for c in self.preset.configs}
        from wise_training.curves import plot_curves, read_metrics

        plot_curves(
            {c: read_metrics(path) for c, path in runs.items()}, folder / "training_curves.png"
        )

    # -------------------------------------------------------------------- the end


def _pipeline(run: Reproduction, config: Any, policy: Any) -> Any:
    """The evaluator's pipeline: the product's for checkpoints, a rule-based policy behind the
    same pipeline (same SAM2, parser and scoring) for the baselines."""
    from wise_perception.pipeline import PipelineConfig, WisePipeline
    from wise_perception.segmenter import load_segmenter
    from wise_training.evaluate import open_eval_pipeline

    if not policy.path.startswith("baseline:"):
        return open_eval_pipeline(config, policy)
    from .baselines import ScriptedPolicy

    segmenter = load_segmenter(str(run.sam2), device="cpu", dtype="float32")
    settings = PipelineConfig(policy_frame=run.preset.frame, batch_size=config.batch_size)
    return WisePipeline(ScriptedPolicy(policy.path.split(":", 1)[1]), segmenter, settings)


class _counting:
    """A pipeline that advances the evaluation's progress bar by the samples it serves."""

    def __init__(self, pipeline: Any, bar: Any) -> None:
        self.pipeline, self.bar = pipeline, bar

    def segment_batch(self, images: list, commands: list, **options: Any) -> list:
        results = self.pipeline.segment_batch(images, commands, **options)
        self.bar.update(len(images))
        return results

    def segment(self, image: Any, command: str, **options: Any) -> Any:
        result = self.pipeline.segment(image, command, **options)
        self.bar.update(1)
        return result

    def close(self) -> None:
        self.pipeline.close()


# ------------------------------------------------------------------------ console and main


@contextlib.contextmanager
def loss_bar(steps: int, name: str) -> Iterator[Callable[[int, float], None]]:
    """A console progress bar for a training loop; yields its ``progress(step, loss)``."""
    from tqdm import tqdm

    with tqdm(total=steps, desc=name, unit="step", dynamic_ncols=True) as bar:

        def progress(step: int, loss: float) -> None:
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{loss:.3f}")

        yield progress


def quiet_libraries() -> None:
    """One progress bar per stage: no per-file weight-loading bars, no library chatter."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="    %(levelname)s %(name)s: %(message)s")
    for name in ("wise_training", "wise_perception"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def seed_everything(seed: int, threads: int) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def summary(run: Reproduction, runner: StageRunner, started: float) -> str:
    table = (run.eval / "table.md").read_text(encoding="utf-8")
    lines = ["", "Table 3 at CPU scale (test split):", "", table, "Stage timings:"]
    for t in runner.timings:
        kept = " (kept from an earlier run)" if t.skipped else ""
        lines.append(f"  {t.name:28s} {clock(t.wall_s):>8s} wall  {clock(t.cpu_s):>8s} CPU{kept}")
    total_wall = sum(t.wall_s for t in runner.timings if not t.skipped)
    total_cpu = sum(t.cpu_s for t in runner.timings if not t.skipped)
    lines.append(f"  {'this run':28s} {clock(total_wall):>8s} wall  {clock(total_cpu):>8s} CPU")
    lines.append("")
    lines.append(f"Outputs: {run.eval}/ (report.json, table.md, tokens.png, training_curves.png);")
    lines.append(f"TensorBoard: tensorboard --logdir {run.runs}")
    lines.append(f"Elapsed: {clock(time.perf_counter() - started)}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wise_dev.reproduce", description=help_text(__doc__.split("\n\n")[0])
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument(
        "--quick", action="store_const", const="quick", dest="preset", help="same as --preset quick"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help=f"run folder (default: {DEFAULT_OUT}/<preset>)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        # Measured on the 2-core machine: SFT at 0.8 s/step with one thread, 8-10 s/step with
        # two while another process was busy (threads waiting on each other); the models are
        # too small for a second thread to pay.
        help="torch threads (default 1; the same count gives the same table)",
    )
    parser.add_argument("--restart", action="store_true", help="run every stage again")
    return parser


RUN_RECORD = "run.json"  # the preset and thread count of the run in its folder


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preset = PRESETS[args.preset]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    quiet_libraries()
    seed_everything(preset.seed, args.threads)
    out = args.out or DEFAULT_OUT / preset.name
    run = Reproduction(preset, out, args.threads)
    runner = StageRunner(run.out, lambda *parts: fingerprint(str(args.threads), *parts))
    started = time.perf_counter()
    print(f"reproduce: preset {preset.name}, {args.threads} threads, into {run.out}")
    # What remakes this run (python -m wise_dev.reproduce.pack writes it into the model card).
    (run.out / RUN_RECORD).write_text(
        json.dumps({"preset": preset.name, "threads": args.threads}) + "\n", encoding="utf-8"
    )
    runner.run(run.stages(), restart=args.restart)
    text = summary(run, runner, started)
    (run.eval / "summary.txt").write_text(text + "\n", encoding="utf-8")
    (run.out / "timings.json").write_text(
        json.dumps([t.__dict__ for t in runner.timings], indent=2) + "\n", encoding="utf-8"
    )
    print(text)
    return 0


__all__ = ["TABLE_3", "main"]
