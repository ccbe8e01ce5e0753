"""Teaching a tiny SAM2 to track, on the CPU: ``python -m wise_dev.train_tracker --out DIR``.

No SAM2 weights can be had offline, and a random SAM2's memory follows nothing. This trains a
tiny ``Sam2VideoModel`` (``tiny_models.tiny_sam2_video_config`` at 128x128, SAM2.1's memory
bank of 7 memories and 16 object pointers, 1.4 M parameters) on synthetic streams
(:mod:`wise_dev.moving_shapes`), in two phases: prompted segmentation of single frames (every
object of a frame prompted with its box and a point), then streams whose first frame is
seeded (box and point, or one stream in four its masks) and whose later frames run through
transformers' own video forward with gradients (the code the tracker runs), backpropagating
through the memory across the stream. The losses are those SAM2 is trained with, simplified:
per frame, binary cross entropy plus dice on the mask, and binary cross entropy on the
object's presence. Everything is learnt from scratch; there is nothing to start from.

Measured here (2 shared cores, December 2026; README, *Tracking*): the first phase learns
(prompted IoU 0.76 after 1,500 steps, 6 minutes), once the model is initialised as PyTorch
does (:func:`from_scratch`) with one positional encoding (``share_positional_encoding``); the
second did not teach the memory to follow within the CPU budget (tracked masks cover every
shape, the same whatever the seed). The command writes the curve and the held-out scores
(tracked IoU against the seed's true mask held still and against the other shapes) into
``DIR/training.json`` next to the weights (float16 safetensors, about 3 MB);
``--evaluate DIR`` scores a folder again.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wise_perception.core.metrics import score_masks
from wise_perception.segmenter.sam2_video import MEMORY_MODULES

from .moving_shapes import Stream, make_stream
from .tiny_models import (
    from_scratch,
    sam2_processor,
    share_positional_encoding,
    tiny_sam2_video_config,
)

IMAGE_SIZE = 128
TRAIN_SEEDS = 1_000_000  # training streams use seeds from here on; evaluation seeds are below


def tracker_config() -> Any:
    # One mask while tracking (multimask_output_for_tracking=False): the tiny decoder's three
    # candidate masks and its IoU head would need SAM2's multi-mask loss to be chosen between.
    return tiny_sam2_video_config(
        image_size=IMAGE_SIZE,
        num_maskmem=7,
        max_object_pointers=16,
        multimask_output_for_tracking=False,
    )


def _video_processor() -> Any:
    return sam2_processor(IMAGE_SIZE, video=True)


def clip_loss(
    model: Any, processor: Any, stream: Stream, *, seed_with_mask: bool
) -> tuple[Any, dict[str, float]]:
    """Loss of one stream through transformers' video forward, with gradients. Every object
    well visible on the seed frame is tracked (the target and its distractors: each is some
    answer's target), so one pass of the image encoder teaches several tracks."""
    import torch
    import torch.nn.functional as F
    from transformers import Sam2VideoModel

    forward = Sam2VideoModel.forward.__wrapped__  # the forward without its inference_mode
    length, _, height, width = stream.objects.shape
    seeded = [i for i in range(stream.objects.shape[1]) if stream.objects[0, i].sum() >= 30]
    ids = list(range(1, len(seeded) + 1))
    pixels = processor(images=list(stream.frames), return_tensors="pt")["pixel_values"]
    session = processor.init_video_session(inference_device="cpu", dtype=torch.float32)
    if seed_with_mask:
        # A copy: the session keeps the list as its "new inputs" and empties it as it goes.
        processor.add_inputs_to_inference_session(
            session,
            frame_idx=0,
            obj_ids=list(ids),
            input_masks=[stream.objects[0, i] for i in seeded],
        )
    else:
        for obj_id, i in zip(ids, seeded, strict=True):
            box, point = stream.prompt(0, i)
            processor.add_inputs_to_inference_session(
                session,
                frame_idx=0,
                obj_ids=obj_id,
                input_boxes=[[list(box)]],
                input_points=[[[list(point)]]],
                input_labels=[[[1]]],
                original_size=(height, width),
            )
        session.obj_with_new_inputs = list(ids)
    low = model.prompt_encoder.mask_input_size  # pred_masks resolution (image size / 4)
    truth = torch.from_numpy(stream.objects[:, seeded]).float()  # (T, K, H, W)
    truth_low = F.interpolate(truth, size=low, mode="area")
    mask_terms, score_terms, ious = [], [], []
    for t in range(length):
        out = forward(model, inference_session=session, frame=pixels[t], frame_idx=t)
        if t == 0 and seed_with_mask:
            continue  # the seed masks are passed through, nothing to learn on them
        logits = out.pred_masks.reshape(len(ids), *low)
        scores = out.object_score_logits.reshape(len(ids))
        visible = truth[t].flatten(1).any(dim=1).float()
        score_terms.append(F.binary_cross_entropy_with_logits(scores, visible))
        for k in range(len(ids)):
            if scores[k].item() <= 0:
                continue  # SAM2 replaced the mask logits with "no object": no gradient
            target = truth_low[t, k]
            prob = torch.sigmoid(logits[k])
            dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
            mask_terms.append(F.binary_cross_entropy_with_logits(logits[k], target) + dice)
        # The target's IoU at full resolution, as the tracker would report it.
        predicted = np.zeros((height, width), bool)
        if scores[0].item() > 0:
            up = F.interpolate(logits[:1, None].detach(), size=(height, width), mode="bilinear")
            predicted = (up[0, 0] > 0).numpy()
        ious.append(mask_iou(predicted, stream.masks[t]))
    seed_iou = ious.pop(0) if not seed_with_mask else float("nan")
    loss = torch.stack(score_terms).mean()
    if mask_terms:
        loss = loss + torch.stack(mask_terms).mean()
    stats = {
        "loss": float(loss.detach()),
        "iou": float(np.mean(ious)) if ious else float("nan"),
        "seed_iou": seed_iou,
    }
    return loss, stats


def mask_iou(pred: np.ndarray, target: np.ndarray) -> float:
    """The evaluator's per-sample IoU (two empty masks: 1)."""
    return score_masks(pred, target).iou


def evaluate(
    tracker: Any, streams: Sequence[Stream], *, seed_with_mask: bool = False
) -> dict[str, float]:
    """Mean IoU over the frames after the seed of the tracker's masks with the target's true
    masks (``tracked_iou``) and with the other objects' (``distractor_iou``: a tracker that
    segments every shape would score there too), and of the seed frame's true mask held still
    (``held_still_iou``: what a single answer gives a robot that does not track)."""
    from wise_perception.core.answer import ObjectPrompt

    tracked, held, distractor = [], [], []
    for stream in streams:
        box, point = stream.prompt(0)
        tracker.start(
            stream.frames[0],
            [ObjectPrompt(box, (point,))],
            masks=[stream.masks[0]] if seed_with_mask else None,
        )
        for t in range(1, len(stream.frames)):
            mask = tracker.step(stream.frames[t]).mask
            tracked.append(mask_iou(mask, stream.masks[t]))
            distractor.append(mask_iou(mask, stream.objects[t, 1:].any(axis=0)))
            held.append(mask_iou(stream.masks[0], stream.masks[t]))
    return {
        "tracked_iou": float(np.mean(tracked)),
        "held_still_iou": float(np.mean(held)),
        "distractor_iou": float(np.mean(distractor)),
    }


def eval_streams(count: int, *, length: int = 24, size: int = 160) -> list[Stream]:
    """Held-out streams (seeds 0..count-1, never trained on), larger than the model's input
    and longer than the training clips."""
    return [
        make_stream(seed, length=length, height=size * 3 // 4, width=size) for seed in range(count)
    ]


def score_folder(folder: Path, count: int) -> dict[str, Any]:
    """The held-out scores of a trained folder, through the product's tracker."""
    from wise_perception.segmenter.sam2_video import Sam2VideoTracker

    tracker = Sam2VideoTracker.from_pretrained(folder, device="cpu", dtype="float32")
    streams = eval_streams(count)
    rounded = {}
    for key, with_mask in (("eval", False), ("eval_seeded_with_mask", True)):
        scores = evaluate(tracker, streams, seed_with_mask=with_mask)
        rounded[key] = {k: round(v, 4) for k, v in scores.items()}
    return {"eval_streams": count, "eval_frames_per_stream": len(streams[0].frames), **rounded}


def train(
    out: Path,
    *,
    image_steps: int,
    steps: int,
    length: int,
    batch: int,
    track_batch: int,
    lr: float,
    seed: int,
    threads: int,
    eval_count: int,
    init: Path | None = None,
    memory_lr_scale: float = 1.0,
    log: Any = print,
) -> dict[str, Any]:
    """Two phases, each with its own warm-up and cosine decay: ``image_steps`` steps on single
    frames (prompted segmentation: cheap, and the memory has nothing to follow before the seed
    frame is segmented), then ``steps`` steps on streams of ``length`` frames (tracking)."""
    import torch
    from transformers import Sam2VideoModel

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if init is not None:  # go on from a trained folder (its config, its weights)
        model = Sam2VideoModel.from_pretrained(init, dtype=torch.float32)
    else:
        model = share_positional_encoding(from_scratch(Sam2VideoModel(tracker_config())))
    model.eval()  # eval: the forward stores what inference stores; no dropout
    processor = _video_processor()
    memory = [p for n, p in model.named_parameters() if n.split(".")[0] in MEMORY_MODULES]
    others = [p for n, p in model.named_parameters() if n.split(".")[0] not in MEMORY_MODULES]
    optimizer = torch.optim.AdamW(
        [{"params": others, "scale": 1.0}, {"params": memory, "scale": memory_lr_scale}],
        lr=lr,
        weight_decay=0.01,
    )

    def lr_at(step: int, total: int) -> float:  # linear warm-up, cosine decay to a tenth
        warmup = max(total // 20, 1)
        if step < warmup:
            return lr * (step + 1) / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    started = time.perf_counter()
    curve: list[dict[str, Any]] = []
    drawn = 0  # streams drawn so far: each step's streams are new
    phases = (("image", image_steps, 1, batch), ("track", steps, length, track_batch))
    for phase, total, frames, streams in phases:
        window: list[dict[str, float]] = []
        for step in range(total):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total) * group["scale"]
            optimizer.zero_grad(set_to_none=True)
            for _ in range(streams):
                stream = make_stream(
                    TRAIN_SEEDS + seed * 100_000_000 + drawn,
                    length=frames,
                    height=IMAGE_SIZE,
                    width=IMAGE_SIZE,
                )
                drawn += 1
                # One stream in four is seeded with its masks (the tracker's other seeding);
                # a single frame has nothing to learn then.
                with_mask = frames > 1 and rng.random() < 0.25
                loss, stats = clip_loss(model, processor, stream, seed_with_mask=with_mask)
                (loss / streams).backward()
                window.append(stats)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if (step + 1) % 50 == 0 or step + 1 == total:
                point = {
                    "phase": phase,
                    "step": step + 1,
                    "seconds": round(time.perf_counter() - started, 1),
                    "loss": round(float(np.mean([w["loss"] for w in window])), 4),
                    "seed_iou": round(float(np.nanmean([w["seed_iou"] for w in window])), 4),
                }
                if frames > 1:
                    point["tracked_iou"] = round(float(np.nanmean([w["iou"] for w in window])), 4)
                curve.append(point)
                window = []
                log(json.dumps(point))
    train_seconds = time.perf_counter() - started

    out.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(out)  # float16 on disk (a few MB); loads as float32
    sam2_processor(IMAGE_SIZE, video=True).save_pretrained(out)
    eval_started = time.perf_counter()
    scores = score_folder(out, eval_count)
    report = {
        "command": "python -m wise_dev.train_tracker " + " ".join(sys.argv[1:]),
        "image_steps": image_steps,
        "steps": steps,
        "clip_frames": length,
        "batch": batch,
        "track_batch": track_batch,
        "lr": lr,
        "memory_lr_scale": memory_lr_scale,
        "init": str(init) if init is not None else None,
        "seed": seed,
        "threads": threads,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(train_seconds, 1),
        "curve": curve,
        **scores,
        "eval_seconds": round(time.perf_counter() - eval_started, 1),
    }
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wise_dev.train_tracker", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, help="folder for the trained SAM2")
    parser.add_argument(
        "--evaluate",
        type=Path,
        default=None,
        help="only score this trained folder on the held-out streams (its training.json is "
        "updated)",
    )
    parser.add_argument(
        "--image-steps", type=int, default=1500, help="steps on single frames first"
    )
    parser.add_argument("--steps", type=int, default=400, help="steps on streams after them")
    parser.add_argument("--length", type=int, default=8, help="frames per training stream")
    parser.add_argument("--batch", type=int, default=3, help="frames per step, image phase")
    parser.add_argument("--track-batch", type=int, default=2, help="streams per step after it")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--memory-lr-scale", type=float, default=1.0, help="learning rate factor of the memory"
    )
    parser.add_argument("--init", type=Path, default=None, help="start from this trained folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared CPU)")
    parser.add_argument("--eval-streams", type=int, default=40, help="held-out streams to score")
    args = parser.parse_args(argv)
    if args.evaluate is not None:
        import torch

        torch.set_num_threads(args.threads)
        scores = score_folder(args.evaluate, args.eval_streams)
        record = args.evaluate / "training.json"
        if record.is_file():
            report = json.loads(record.read_text(encoding="utf-8"))
            record.write_text(json.dumps({**report, **scores}, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(scores))
        return 0
    if args.out is None:
        parser.error("--out is required (or --evaluate FOLDER)")
    report = train(
        args.out,
        image_steps=args.image_steps,
        steps=args.steps,
        length=args.length,
        batch=args.batch,
        track_batch=args.track_batch,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        eval_count=args.eval_streams,
        init=args.init,
        memory_lr_scale=args.memory_lr_scale,
    )
    print(json.dumps({k: report[k] for k in ("train_seconds", "eval", "eval_seeded_with_mask")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
