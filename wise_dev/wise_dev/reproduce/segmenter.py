"""A small SAM2 that really segments the scene world: a tiny ``Sam2Model`` (transformers classes,
``wise_dev.tiny_models.build_tiny_sam2``) trained here to turn a box and two points into the
object's visible mask, then frozen, as the paper's SAM2-Large is (§3.1).

Training follows SAM's recipe at small scale: three masks per prompt (``multimask_output``, what
the pipeline's segmenter asks for), the loss of the best of the three (focal + dice), and the IoU
head taught the IoU each mask really has, so the pipeline's "highest predicted IoU" pick works.
Prompts are jittered (box corners, points), since at evaluation they come from the policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wise_training.scenes import make_sample

OBJECTS_PER_IMAGE = 3  # every scene has at least MIN_OBJECTS = 3


@dataclass(frozen=True)
class SegmenterSettings:
    steps: int
    batch_images: int = 8
    learning_rate: float = 1e-3
    seed: int = 0


def _batch(
    seed: int, first: int, count: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[list[list[float]]], list[list[list[list[float]]]], list[Any]]:
    images, boxes, points, masks = [], [], [], []
    for index in range(first, first + count):
        scene = make_sample(seed, "train", index).scene
        chosen = rng.choice(len(scene.objects), OBJECTS_PER_IMAGE, replace=False)
        images.append(scene.image)
        image_boxes, image_points, image_masks = [], [], []
        for i in chosen:
            obj = scene.objects[int(i)]
            x1, y1, x2, y2 = obj.box
            w, h = x2 - x1 + 1, y2 - y1 + 1
            jitter = rng.normal(0.0, 0.06, 4) * np.array([w, h, w, h])
            image_boxes.append([float(v) for v in np.array(obj.box) + jitter])
            image_points.append(
                [
                    [float(x + rng.normal(0, 1.5)), float(y + rng.normal(0, 1.5))]
                    for x, y in obj.points
                ]
            )
            image_masks.append(scene.visible[int(i)])
        boxes.append(image_boxes)
        points.append(image_points)
        masks.append(np.stack(image_masks))
    return images, boxes, points, masks


def _losses(logits: Any, target: Any) -> Any:
    """Binary cross entropy + dice per mask: logits (..., H, W), target the same shape. (SAM's
    20:1 focal + dice left a tiny SAM2 at a constant mask here, val IoU 0.2 after 600 steps;
    the tracker's training, wise_dev.train_tracker, learns with these two.)"""
    import torch

    prob = logits.sigmoid()
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    inter = (prob * target).sum(dim=(-2, -1))
    dice = 1 - (2 * inter + 1) / (prob.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1)) + 1)
    return ce.mean(dim=(-2, -1)) + dice


def train_segmenter(
    base: Path,
    out: Path,
    settings: SegmenterSettings,
    *,
    scene_seed: int,
    train_scenes: int,
    progress: Callable[[int, float], None] | None = None,
) -> Path:
    """Train the SAM2 folder ``base`` on train-split scenes; save to ``out`` (safetensors)."""
    import torch
    from transformers import Sam2Model, Sam2Processor

    from wise_dev.tiny_models import from_scratch, share_positional_encoding

    processor = Sam2Processor.from_pretrained(base)
    torch.manual_seed(settings.seed)
    # PyTorch's initialisation and one positional encoding for prompts and image: with
    # transformers' N(0, 0.02) init and two random encodings a tiny SAM2 learns to ignore its
    # prompts (measured, wise_dev.train_tracker; here: mask IoU 0.0 on val after 300 steps).
    model = Sam2Model.from_pretrained(base, dtype=torch.float32)
    model = share_positional_encoding(from_scratch(model)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, settings.learning_rate, total_steps=settings.steps, pct_start=0.1
    )
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    for step in range(settings.steps):
        first = int(rng.integers(0, max(1, train_scenes - settings.batch_images)))
        images, boxes, points, masks = _batch(scene_seed, first, settings.batch_images, rng)
        inputs = processor(
            images=images,
            input_boxes=boxes,
            input_points=points,
            input_labels=[[[1, 1]] * OBJECTS_PER_IMAGE] * len(images),
            return_tensors="pt",
        )
        out_ = model(
            pixel_values=inputs["pixel_values"],
            input_boxes=inputs["input_boxes"],
            input_points=inputs["input_points"],
            input_labels=inputs["input_labels"],
            multimask_output=True,
        )
        logits = out_.pred_masks  # (B, objects, 3, h, w)
        size = logits.shape[-2:]
        target = torch.from_numpy(np.stack(masks)).float()  # (B, objects, H, W)
        target = torch.nn.functional.interpolate(target, size=size, mode="area")
        target = target[:, :, None].expand_as(logits)
        losses = _losses(logits, target)  # (B, objects, 3)
        with torch.no_grad():
            pred = logits > 0
            truth = target > 0.5
            inter = (pred & truth).sum(dim=(-2, -1)).float()
            union = (pred | truth).sum(dim=(-2, -1)).float().clamp(min=1)
            iou = inter / union
        best = losses.min(dim=-1).values.mean()
        iou_loss = torch.nn.functional.mse_loss(out_.iou_scores, iou)
        loss = best + iou_loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if progress is not None:
            progress(step + 1, float(loss.detach()))
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def segmenter_iou(folder: Path, scene_seed: int, split: str, count: int) -> float:
    """Mean mask IoU of the segmenter (as the pipeline loads and prompts it) on the visible masks
    of ``count`` scenes' objects, prompted with their true box and points: the ceiling of the
    policy's gIoU."""
    from wise_perception.core.answer import ObjectPrompt
    from wise_perception.segmenter.sam2_transformers import Sam2TransformersSegmenter

    segmenter = Sam2TransformersSegmenter.from_pretrained(folder, device="cpu")
    scores = []
    for index in range(count):
        scene = make_sample(scene_seed, split, index).scene
        encoding = segmenter.encode(scene.image)
        prompts = [
            ObjectPrompt(tuple(o.box), tuple(tuple(p) for p in o.points)) for o in scene.objects
        ]
        for seg, truth in zip(segmenter.decode(encoding, prompts), scene.visible, strict=True):
            inter = np.logical_and(seg.mask, truth).sum()
            union = np.logical_or(seg.mask, truth).sum()
            scores.append(inter / union if union else 1.0)
    segmenter.close()
    return float(np.mean(scores))
