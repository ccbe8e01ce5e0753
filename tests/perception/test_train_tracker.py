"""wise_dev.train_tracker, the tool that teaches a tiny SAM2 to track: a few real steps.

Its measured outcome is in the README (*Tracking*); here only that it trains what it says it
trains (the memory modules move only once streams are trained on), saves a folder the
product's tracker loads, and scores it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import Sam2VideoModel

from wise_dev.tiny_models import share_positional_encoding
from wise_dev.train_tracker import from_scratch, tracker_config, train


def _initial() -> Sam2VideoModel:
    torch.manual_seed(0)  # train(seed=0) draws its model first, the same way
    return share_positional_encoding(from_scratch(Sam2VideoModel(tracker_config())))


def _moved(before: Sam2VideoModel, after: Sam2VideoModel, prefix: str) -> bool:
    # float16 on disk: a change must exceed its rounding
    pairs = [
        (p, dict(after.named_parameters())[n])
        for n, p in before.named_parameters()
        if n.startswith(prefix)
    ]
    return any(not torch.allclose(a, b.float(), atol=1e-3) for a, b in pairs)


def test_a_few_steps_train_the_memory_and_save_a_tracker(tmp_path: Path) -> None:
    settings = dict(length=3, batch=1, track_batch=1, lr=1e-3, seed=0, threads=1, eval_count=1)
    image_only = train(tmp_path / "image", image_steps=2, steps=0, **settings, log=lambda _: None)
    tracked = train(tmp_path / "track", image_steps=2, steps=2, **settings, log=lambda _: None)
    start = _initial()
    first = Sam2VideoModel.from_pretrained(tmp_path / "image", dtype=torch.float32)
    second = Sam2VideoModel.from_pretrained(tmp_path / "track", dtype=torch.float32)
    assert _moved(start, first, "mask_decoder.")  # single frames train the decoder...
    assert not _moved(start, first, "memory_attention.")  # ... and leave the memory alone
    assert _moved(start, second, "memory_attention.")  # streams train the memory
    record = json.loads((tmp_path / "track" / "training.json").read_text())
    assert record == tracked | {}  # what train() returned is what it wrote
    assert [p["phase"] for p in record["curve"]] == ["image", "track"]
    for report in (image_only, tracked):
        scores = report["eval"]
        assert set(scores) == {"tracked_iou", "held_still_iou", "distractor_iou"}
        assert all(0.0 <= v <= 1.0 for v in scores.values())
