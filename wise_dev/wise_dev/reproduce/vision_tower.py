"""The stand-in's vision tower, pretrained before SFT, as Qwen2.5-VL's ViT arrives pretrained.

Qwen2.5-VL-7B reads images through a ViT whose features already say what is where; a tower
left at its random initialisation does not. Its patch filters are white noise, so a token's
features are dominated by *where* inside the token an object's edge falls and by the floor's
stripes, not by the object's colour or shape (measured on the default run's tower: the token's
place explains 57% of the features' variance, the colour of the object in its cell 8%, its shape
5%). A policy that must find "the red circle" among 36 such tokens learns the lookup slowly.

So the tower is trained here on dense labels of the scene world, per image token (the 28 px
cell the merger pools): the colour and shape of the object covering most of it (or none), and
its layout column and row, through one linear head that is then discarded; the tower is frozen
again for SFT (``SftSettings.freeze_vision``). Scenes come from their own seed (``SEED``), so
no evaluation scene is seen.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

RECORD = "vision_pretraining.json"  # what the tower was pretrained with, beside the weights
SEED = 11  # scenes of the tower's pretraining: never a split's seed
CELL = 28  # px per image token (14 px patches, 2 x 2 merged)
MIN_COVER = 0.1  # of a token's pixels an object must cover to name the token


@dataclass(frozen=True)
class VisionPretraining:
    steps: int
    scenes: int = 1500
    held_out: int = 200
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.01


def label_names() -> dict[str, list[str]]:
    """The classes of each per-token label."""
    from wise_training.scenes import COLOURS, GRID, SHAPES

    places = [str(i) for i in range(GRID)]
    return {
        "colour": ["none", *COLOURS],
        "shape": ["none", *SHAPES],
        "column": places,
        "row": places,
    }


def token_labels(scene: Any) -> np.ndarray:
    """(tokens, 4) class indices per image token, raster order: colour, shape, column, row."""
    from wise_training.scenes import GRID

    names = label_names()
    side = scene.image.shape[0] // CELL
    labels = np.zeros((side * side, 4), np.int64)
    for ty in range(side):
        for tx in range(side):
            window = (slice(ty * CELL, (ty + 1) * CELL), slice(tx * CELL, (tx + 1) * CELL))
            covered = [int(v[window].sum()) for v in scene.visible]
            best = int(np.argmax(covered)) if covered else -1
            named = best >= 0 and covered[best] >= MIN_COVER * CELL * CELL
            obj = scene.objects[best] if named else None
            labels[ty * side + tx] = (
                names["colour"].index(obj.colour) if obj else 0,
                names["shape"].index(obj.shape) if obj else 0,
                tx * GRID // side,
                ty * GRID // side,
            )
    return labels


def _scenes(count: int, frame: int, rng: np.random.Generator) -> tuple[list[Any], np.ndarray]:
    from PIL import Image

    from wise_training.scenes import make_scene

    images, labels = [], []
    for _ in range(count):
        scene = make_scene(rng, frame)
        images.append(Image.fromarray(scene.image))
        labels.append(token_labels(scene))
    return images, np.stack(labels)


def tower_features(processor: Any, tower: Any, images: list[Any]) -> Any:
    """(images x tokens, width) features of the vision tower, as the language model receives
    them: one row per merged 28 px token, raster order per image."""
    inputs = processor.image_processor(images=images, return_tensors="pt")
    out = tower(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
    return getattr(out, "pooler_output", out)


def pretrain_vision(
    policy: Path,
    settings: VisionPretraining,
    frame: int,
    *,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, float]:
    """Train ``policy``'s vision tower (in place) on per-token labels; returns the held-out
    token accuracy of each label."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(policy)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(policy, dtype=torch.float32)
    tower = model.model.visual
    rng = np.random.default_rng(SEED)
    train_images, train_labels = _scenes(settings.scenes, frame, rng)
    test_images, test_labels = _scenes(settings.held_out, frame, rng)
    sizes = [len(v) for v in label_names().values()]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        head = torch.nn.Linear(model.config.vision_config.out_hidden_size, sum(sizes))
    optimiser = torch.optim.AdamW(
        [*tower.parameters(), *head.parameters()],
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
    )

    def logits(images: list[Any]) -> list[Any]:
        return head(tower_features(processor, tower, images)).split(sizes, dim=-1)

    tower.train()
    for step in range(settings.steps):
        batch = rng.choice(len(train_images), settings.batch_size, replace=False)
        target = torch.as_tensor(train_labels[batch]).reshape(-1, len(sizes))
        outputs = logits([train_images[i] for i in batch])
        loss = sum(
            torch.nn.functional.cross_entropy(out, target[:, k]) for k, out in enumerate(outputs)
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if progress is not None:
            progress(step + 1, float(loss))
    tower.eval()
    target = torch.as_tensor(test_labels).reshape(-1, len(sizes))
    with torch.no_grad():
        outputs = logits(test_images)
    accuracy = {
        name: float((out.argmax(-1) == target[:, k]).float().mean())
        for k, (name, out) in enumerate(zip(label_names(), outputs, strict=True))
    }
    model.save_pretrained(policy)
    record = {"settings": asdict(settings), "seed": SEED, "held_out_token_accuracy": accuracy}
    (policy / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return accuracy
