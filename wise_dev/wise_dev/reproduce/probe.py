"""Where a stand-in policy's boxes go wrong: three measurements that separate "the image tokens
do not carry it" from "the language model does not read them".

    python -m wise_dev.reproduce.probe [--run .build/reproduce/default] [--policy DIR] [--scenes 40]

1. **Grounding by name**: the grounding request the base is taught on every scene
   (``chains.GROUNDING_REQUEST``), for the instruction's target alone, answered greedily. It
   counts boxes that find the target (IoU > 0.5) and boxes whose centre lies in the target's
   layout cell (``scenes.GRID``): a right cell with a wrong box is a size error, a wrong cell a
   lookup error; and the share of answers in the most common cell (a policy that answers a prior).
2. **What the frozen image tokens carry**: a ridge classifier on each image token's vision
   features (the tower's output, as the language model receives it), fitted on 80% of the scenes
   and scored on the rest: the token's layout column, its row, and the colour of the object in
   its cell ("none" for an empty cell). High accuracy here and a low count in 1. means the
   language model has not learned to look the tokens up.
3. **How much the box depends on the image**: the teacher-forced loss of the grounding answer's
   digits with the scene's own image against another scene's. Equal losses mean the boxes come
   from priors, not from the picture.

The numbers are measurements, not checks: the reproduction's README says what they were.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import help_text

HIT_IOU = 0.5  # as the demo and the reproduction's checks count a box as found
HELD_OUT_SHARE = 0.2  # of the scenes, for scoring the ridge classifier
RIDGE = 1.0  # the ridge penalty on standardised features
_BOX = re.compile(r"\[(\d+),\s*(\d+),\s*(\d+),\s*(\d+)\]")


def layout_cell(box: Sequence[float], size: int) -> int:
    """The ``scenes.GRID`` layout cell (row-major) holding ``box``'s centre."""
    from wise_training.scenes import GRID

    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    col = min(GRID - 1, max(0, int(cx * GRID // size)))
    row = min(GRID - 1, max(0, int(cy * GRID // size)))
    return row * GRID + col


def ridge_accuracy(
    features: np.ndarray, labels: Sequence[str], groups: Sequence[int], ridge: float = RIDGE
) -> dict[str, float]:
    """Held-out accuracy of a one-vs-rest ridge classifier (closed form, so deterministic):
    fitted on the groups (scenes) before the last ``HELD_OUT_SHARE`` of them, scored on those;
    with the majority class's share of the held-out rows as the chance level."""
    x = np.asarray(features, np.float64)
    y = np.asarray(labels)
    g = np.asarray(groups)
    cut = np.quantile(np.unique(g), 1 - HELD_OUT_SHARE)
    train, test = g < cut, g >= cut
    if not train.any() or not test.any():
        raise ValueError("too few scenes to hold some out")
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mean) / std
    classes = sorted(set(y[train]))
    targets = (y[train, None] == np.array(classes)[None, :]).astype(np.float64)
    a = x[train].T @ x[train] + ridge * np.eye(x.shape[1])
    weights = np.linalg.solve(a, x[train].T @ targets)
    predicted = np.array(classes)[np.argmax(x[test] @ weights, axis=1)]
    majority = Counter(y[test]).most_common(1)[0][1] / test.sum()
    return {"accuracy": float((predicted == y[test]).mean()), "chance": float(majority)}


class Probe:
    """A policy folder (model + processor) and the scenes it is probed on."""

    def __init__(self, policy: Path, records: Sequence[dict[str, Any]], root: Path) -> None:
        import torch
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        from wise_training.scenes import CANVAS

        from .base_policy import load_images

        self.processor = AutoProcessor.from_pretrained(policy)
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            policy, dtype=torch.float32
        ).eval()
        self.records = list(records)
        self.images = load_images([root / r["image"] for r in self.records])
        self.size = self.images[0].width if self.images else CANVAS

    def _request(self, record: dict[str, Any]) -> tuple[str, str]:
        """The grounding request for the target alone and its taught answer."""
        from .chains import GROUNDING_REQUEST, grounding_item, name

        target = record["objects"][record["target"]]
        return f"{GROUNDING_REQUEST} {name(target)}.", f"{grounding_item(target)}."

    def _prompt(self, request: str) -> str:
        from wise_perception.core.prompts import chat_messages

        from .run import SYSTEM_PROMPT

        return self.processor.apply_chat_template(
            chat_messages(request, system=SYSTEM_PROMPT), tokenize=False, add_generation_prompt=True
        )

    def _named(self) -> list[int]:
        """Records whose target is the only object of its colour and shape (the grounding
        request names objects by those alone)."""
        keep = []
        for i, r in enumerate(self.records):
            names = [(o["colour"], o["shape"]) for o in r["objects"]]
            target = r["objects"][r["target"]]
            keep += [i] if names.count((target["colour"], target["shape"])) == 1 else []
        return keep

    def grounding(self, batch_size: int = 8) -> dict[str, Any]:
        import torch

        from wise_perception.core.geometry import box_iou

        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "left"
        keep = self._named()
        hits = right_cell = parsed = 0
        cells: Counter[int] = Counter()
        for start in range(0, len(keep), batch_size):
            chunk = keep[start : start + batch_size]
            batch = self.processor(
                images=[self.images[i] for i in chunk],
                text=[self._prompt(self._request(self.records[i])[0]) for i in chunk],
                return_tensors="pt",
                padding=True,
            )
            with torch.no_grad():
                out = self.model.generate(**batch, max_new_tokens=24, do_sample=False)
            texts = tokenizer.batch_decode(
                out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
            )
            for i, text in zip(chunk, texts, strict=True):
                found = _BOX.search(text)
                if not found:
                    continue
                parsed += 1
                box = [int(v) for v in found.groups()]
                truth = self.records[i]["objects"][self.records[i]["target"]]["box"]
                hits += box_iou(box, truth) > HIT_IOU
                cell = layout_cell(box, self.size)
                cells[cell] += 1
                right_cell += cell == layout_cell(truth, self.size)
        modal = cells.most_common(1)[0][1] / parsed if parsed else 0.0
        return {
            "scenes": len(keep),
            "parsed": parsed,
            "found": hits,
            "right_cell": right_cell,
            "modal_cell_share": modal,
        }

    def token_features(self) -> dict[str, dict[str, float]]:
        import torch

        from wise_training.scenes import GRID

        from .vision_tower import CELL, tower_features

        rows: list[np.ndarray] = []
        labels: dict[str, list[str]] = {"column": [], "row": [], "colour in cell": []}
        groups: list[int] = []
        for n, (record, image) in enumerate(zip(self.records, self.images, strict=True)):
            with torch.no_grad():
                features = tower_features(self.processor, self.model.model.visual, [image])
            height = width = self.size // CELL
            features = features.reshape(height, width, -1).numpy()
            colours = {layout_cell(o["box"], self.size): o["colour"] for o in record["objects"]}
            for ty in range(height):
                for tx in range(width):
                    col, row = tx * GRID // width, ty * GRID // height
                    rows.append(features[ty, tx])
                    labels["column"].append(str(col))
                    labels["row"].append(str(row))
                    labels["colour in cell"].append(colours.get(row * GRID + col, "none"))
                    groups.append(n)
        x = np.stack(rows)
        return {name: ridge_accuracy(x, y, groups) for name, y in labels.items()}

    def image_dependence(self) -> dict[str, float]:
        """Mean loss of the answer's digit tokens, teacher-forced, with the scene's own image and
        with the next scene's."""
        keep = self._named()
        if len(keep) < 2:
            return {"own_image": float("nan"), "other_image": float("nan")}
        own = [self._digit_loss(i, i) for i in keep]
        other = [self._digit_loss(i, keep[(k + 1) % len(keep)]) for k, i in enumerate(keep)]
        return {"own_image": float(np.mean(own)), "other_image": float(np.mean(other))}

    def _digit_loss(self, record: int, image: int) -> float:
        import torch

        request, answer = self._request(self.records[record])
        prompt = self._prompt(request)
        tokenizer = self.processor.tokenizer
        full = self.processor(
            images=[self.images[image]],
            text=[prompt + answer],
            return_tensors="pt",
        )
        start = self.processor(images=[self.images[image]], text=[prompt], return_tensors="pt")[
            "input_ids"
        ].shape[1]
        with torch.no_grad():
            logits = self.model(**full).logits[0, start - 1 : -1]
        targets = full["input_ids"][0, start:]
        losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        digits = torch.tensor([tokenizer.decode([int(t)]).strip().isdigit() for t in targets])
        return float(losses[digits].mean())


def report(results: dict[str, Any]) -> str:
    g = results["grounding"]
    lines = [
        f"Grounding by name ({g['scenes']} scenes whose target's colour and shape are unique):",
        f"  found {g['found']} (box IoU > {HIT_IOU}), right cell {g['right_cell']}, "
        f"parsed {g['parsed']}; {g['modal_cell_share']:.0%} of the answers in one cell",
        "What the frozen image tokens carry (ridge classifier, held-out scenes):",
    ]
    for name, r in results["token_features"].items():
        lines.append(f"  {name}: {r['accuracy']:.1%} (majority class {r['chance']:.1%})")
    d = results["image_dependence"]
    lines.append(
        "Box digits' loss, teacher-forced: "
        f"own image {d['own_image']:.3f}, another scene's {d['other_image']:.3f}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wise_dev.reproduce.probe", description=help_text(__doc__)
    )
    parser.add_argument("--run", type=Path, default=Path(".build/reproduce/default"))
    parser.add_argument("--policy", type=Path, help="a policy folder (default: the run's base)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    from wise_training.scenes import read_records

    from .run import quiet_libraries

    policy = args.policy or args.run / "base" / "policy"
    scenes = args.run / "scenes"
    for path in (policy, scenes / f"{args.split}.jsonl"):
        if not path.exists():
            print(f"error: {path} does not exist; run `make reproduce` first", file=sys.stderr)
            return 2
    quiet_libraries()
    records = read_records(scenes / f"{args.split}.jsonl")[: args.scenes]
    if len(records) < 2:
        print("error: the probe needs at least 2 scenes", file=sys.stderr)
        return 2
    probe = Probe(policy, records, scenes)
    results = {
        "policy": str(policy),
        "grounding": probe.grounding(),
        "token_features": probe.token_features(),
        "image_dependence": probe.image_dependence(),
    }
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
