"""``wise-replay BAG``: replay a recorded robot bag through the node's logic, at the desk.

Reads the bag's image topic and its command topic (or a ``--commands`` file), pairs every
command with a frame as the node does (its frame slot, ``max_image_age_s``, ``command_wait_s``
and queue, in bag time), runs the real pipeline for each ``--policy``, and writes per policy
an output bag of the node's topics and a journal, then one side-by-side report
(:mod:`.report`). Rerunning the same command continues an interrupted replay.

Exit codes: 0 replayed to the bag's end; 2 bad input found before any model loads (not a bag,
a missing topic, a bad commands or labels file, a replay folder of other settings); 3 the
models could not be loaded; 4 the bag ends early (cut or damaged): what it holds was replayed
and reported, and where it ends is said; 130 interrupted (rerun to continue).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.prompts import PromptMode
from .bag import BagError, InputBag, MissingExtra
from .files import InputFileError, read_commands, read_labels
from .journal import JournalError, RunFolder
from .settings import ReplaySettings, read_params_file

EXIT_OK, EXIT_BAD_INPUT, EXIT_LOAD_FAILED, EXIT_ENDED_EARLY, EXIT_INTERRUPTED = 0, 2, 3, 4, 130
LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # a ROS name token: it names the output topics


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wise-replay",
        description="Replay a recorded rosbag2 bag (MCAP or sqlite3) through the node's logic "
        "and the real pipeline: an output bag of the node's topics per policy and one report.",
    )
    parser.add_argument("bag", type=Path, help="rosbag2 folder, or a .mcap / .db3 file")
    parser.add_argument(
        "--policy",
        action="append",
        default=None,
        metavar="[LABEL=]MODEL",
        help="policy checkpoint (folder, hub id or vLLM server URL); repeat to compare "
        "several side by side (default: policy_model of --params-file, else the node's)",
    )
    parser.add_argument("--image-topic", help="image topic (default: the bag's only one)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--command-topic", help="command topic (default: the bag's only String .../command)"
    )
    source.add_argument(
        "--commands", type=Path, help="JSON Lines file of timed commands, for a bag without them"
    )
    parser.add_argument(
        "--labels", type=Path, help="JSON Lines file of a box or mask per command: gIoU, cIoU"
    )
    parser.add_argument(
        "--params-file",
        type=Path,
        help="the node's parameters file (YAML) the robot ran with: pairing, limits, models",
    )
    parser.add_argument("--segmenter", help="SAM2 folder or id (default: as the node's)")
    parser.add_argument("--mode", choices=[m.value for m in PromptMode], help="prompt mode")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:1 (default: auto)")
    parser.add_argument("--dtype", help="auto, bfloat16, float16, float32 (default: auto)")
    parser.add_argument("--max-new-tokens", type=int, help="generation budget")
    parser.add_argument("--max-image-age-s", type=float, help="as the node parameter")
    parser.add_argument("--command-wait-s", type=float, help="as the node parameter")
    parser.add_argument("--queue-size", type=int, help="as the node parameter")
    parser.add_argument(
        "--track-default",
        action="store_true",
        default=None,
        help='track every command that does not say "track": false (the node parameter)',
    )
    parser.add_argument(
        "--out", type=Path, default=Path("replay"), help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--namespace",
        default="/replay/{label}",
        help="namespace of the output topics (default: %(default)s)",
    )
    parser.add_argument(
        "--restart", action="store_true", help="discard earlier results in --out and start over"
    )
    parser.add_argument(
        "--sheet-rows", type=int, default=40, help="commands on the contact sheet (default: 40)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings, policies = _settings(args)
        bag = InputBag.open(args.bag)
        image_topic = bag.image_topic(args.image_topic)
        from .runner import ReplayInputs

        if args.commands is not None:
            inputs = ReplayInputs(
                bag, image_topic, file_commands=read_commands(args.commands, bag.start_ns)
            )
        else:
            inputs = ReplayInputs(
                bag, image_topic, command_topic=bag.command_topic(args.command_topic)
            )
        labels = read_labels(args.labels) if args.labels else {}
    except MissingExtra as exc:
        return _fail(f"{exc}")
    except (BagError, InputFileError, ValueError) as exc:
        return _fail(str(exc))
    for note in bag.notes:
        print(f"wise-replay: {note}", file=sys.stderr)
    return _replay(args, settings, policies, inputs, labels)


def _replay(
    args: argparse.Namespace,
    settings: ReplaySettings,
    policies: list[tuple[str, str]],
    inputs: Any,
    labels: dict[str, Any],
) -> int:
    from .report import write_report
    from .runner import PolicyReplay

    runs, progress = [], None if args.quiet else sys.stderr
    status = EXIT_OK
    try:
        for label, model in policies:
            policy_settings = settings.with_values({"policy_model": model})
            replay = PolicyReplay(
                label,
                inputs,
                policy_settings,
                RunFolder(args.out / label),
                lambda s=policy_settings: load_pipeline(s),
                namespace=args.namespace.format(label=label),
                progress=progress,
            )
            try:
                runs.append(replay.run(restart=args.restart))
            except JournalError as exc:
                return _fail(str(exc))
            except _LoadError as exc:
                print(f"wise-replay: [{label}] could not load the models: {exc}", file=sys.stderr)
                return EXIT_LOAD_FAILED
    except KeyboardInterrupt:
        print(
            "wise-replay: interrupted; what was replayed is kept (and its output bag written): "
            "rerun the same command to continue",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    report = write_report(
        args.out,
        runs,
        labels,
        bag_start_ns=inputs.bag.start_ns,
        inputs=_described(inputs, settings),
        sheet_rows=args.sheet_rows,
    )
    for label, summary in report["policies"].items():
        print(
            f"{label}: {summary['commands']} command(s): "
            + ", ".join(f"{k} {v}" for k, v in summary["statuses"].items())
            + f" -> {summary['output_bag']}"
        )
        if summary["ended_early"]:
            status = EXIT_ENDED_EARLY
            print(f"{label}: {summary['ended_early']}", file=sys.stderr)
    print(f"report: {args.out / 'report.md'}, {args.out / 'contact_sheet.png'}")
    return status


class _LoadError(Exception):
    """The models of a policy could not be loaded."""


def load_pipeline(settings: ReplaySettings) -> Any:
    """The pipeline as the node loads it for these parameters."""
    from ..pipeline import WisePipeline

    try:
        return WisePipeline.from_parameters(settings)
    except Exception as exc:
        raise _LoadError(f"{type(exc).__name__}: {exc}") from exc


def _settings(args: argparse.Namespace) -> tuple[ReplaySettings, list[tuple[str, str]]]:
    settings = ReplaySettings()
    if args.params_file is not None:
        settings = settings.with_values(read_params_file(args.params_file))
    settings = settings.with_values(
        {
            "segmenter_model": args.segmenter,
            "mode": args.mode,
            "device": args.device,
            "dtype": args.dtype,
            "max_new_tokens": args.max_new_tokens,
            "max_image_age_s": args.max_image_age_s,
            "command_wait_s": args.command_wait_s,
            "queue_size": args.queue_size,
            "track_default": args.track_default,
        }
    )
    return settings, _policies(args.policy or [settings.policy_model])


def _policies(specs: list[str]) -> list[tuple[str, str]]:
    """(label, model) per --policy; a label names the output folder and topics."""
    out: list[tuple[str, str]] = []
    for spec in specs:
        label, sep, model = spec.partition("=")
        if not sep or "://" in label:  # no label given (or a URL holding "=")
            model = spec
            label = re.sub(r"\W+", "_", Path(spec.rstrip("/")).name).strip("_") or "policy"
            label = label if label[0].isalpha() else f"p_{label}"
        if not LABEL.match(label):
            raise ValueError(f"policy label {label!r}: use letters, digits and _ (a letter first)")
        if not model:
            raise ValueError(f"--policy {spec!r} names no model")
        out.append((label, model))
    labels = [label for label, _ in out]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"policy labels {repeated} repeat: give each --policy LABEL=MODEL")
    return out


def _described(inputs: Any, settings: ReplaySettings) -> dict[str, Any]:
    pairing = ("max_image_age_s", "command_wait_s", "queue_size", "max_image_pixels")
    return {
        "bag": str(inputs.bag.path),
        "storage": inputs.bag.storage,
        "image_topic": inputs.image_topic.name,
        "commands": inputs.command_topic.name if inputs.command_topic else "commands file",
        "notes": inputs.bag.notes,
        "pairing": {k: getattr(settings, k) for k in pairing},
    }


def _fail(message: str) -> int:
    print(f"wise-replay: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
