"""The synthetic scene world: exact ground truth, one answer per instruction, seeded splits, and
files both the trainer and the evaluator read."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from wise_perception.core.prompts import spec_for
from wise_training import scenes
from wise_training.data import load_training_samples
from wise_training.datasets_eval import EvalSample, read_dataset


def test_a_sample_is_the_same_for_the_same_seed_split_and_index():
    a, b = scenes.make_sample(3, "train", 7), scenes.make_sample(3, "train", 7)
    assert np.array_equal(a.scene.image, b.scene.image)
    assert a.instruction == b.instruction
    other = scenes.make_sample(3, "train", 8)
    assert not np.array_equal(a.scene.image, other.scene.image)
    with pytest.raises(ValueError, match="split"):
        scenes.make_sample(0, "dev", 0)


@pytest.mark.parametrize("index", range(12))
def test_ground_truth_is_exact(index):
    sample = scenes.make_sample(0, "train", index)
    objects, visible = sample.scene.objects, sample.scene.visible
    assert scenes.MIN_OBJECTS <= len(objects) <= scenes.MAX_OBJECTS
    union = np.zeros_like(visible[0])
    for obj, mask in zip(objects, visible, strict=True):
        assert not (union & mask).any()  # visible masks partition the drawn pixels
        union |= mask
        ys, xs = np.nonzero(mask)
        assert obj.box == [xs.min(), ys.min(), xs.max(), ys.max()]
        assert obj.visible_area == mask.sum() >= scenes.MIN_VISIBLE * obj.area
        for x, y in obj.points:  # Seg-Zero's inscribed-circle centres lie inside the object
            assert mask[round(y), round(x)]
        # every visible pixel has the object's colour (no anti-aliasing, exact masks)
        colour = np.array(scenes.COLOURS[obj.colour])
        assert np.abs(sample.scene.image[mask].astype(int) - colour).max() <= scenes.COLOUR_JITTER
    for i, a in enumerate(objects):  # same-coloured objects never touch
        for j, b in enumerate(objects[i + 1 :], i + 1):
            if a.colour == b.colour:
                grown = scenes._dilate(visible[i], 1)
                assert not (grown & visible[j]).any()


def _satisfies(instruction: scenes.Instruction, objects: list[scenes.SceneObject]) -> list[int]:
    """Every object the instruction's words describe, computed apart from the families."""
    text = instruction.text
    if instruction.family in ("colour_shape", "colour_shape_unseen"):
        return [i for i, o in enumerate(objects) if text == f"the {o.colour} {o.shape}"]
    if instruction.family == "shape_only":
        return [i for i, o in enumerate(objects) if text == f"the {o.shape}"]
    if instruction.family == "colour_only":
        return [i for i, o in enumerate(objects) if text == f"the {o.colour} object"]
    if instruction.family == "extreme_size":
        key = (lambda o: o.area) if "largest" in text else (lambda o: -o.area)
        best = max(key(o) for o in objects)
        return [i for i, o in enumerate(objects) if key(o) == best]
    if instruction.family in ("closest_to", "farthest_from"):
        ref = objects[instruction.reference]
        assert text.endswith(f"the {ref.colour} {ref.shape}")
        others = [i for i in range(len(objects)) if i != instruction.reference]
        dist = {i: math.dist(objects[i].centre, ref.centre) for i in others}
        pick = min if instruction.family == "closest_to" else max
        best = pick(dist.values())
        return [i for i in others if dist[i] == best]
    if instruction.family == "same_colour":
        ref = objects[instruction.reference]
        return [
            i
            for i, o in enumerate(objects)
            if o.colour == ref.colour and o.shape != ref.shape and i != instruction.reference
        ]
    return [instruction.target]  # other families: covered by their own margins


@pytest.mark.parametrize("index", range(40))
def test_each_instruction_picks_exactly_its_target(index):
    sample = scenes.make_sample(1, "test", index)
    assert _satisfies(sample.instruction, sample.scene.objects) == [sample.instruction.target]


def test_held_out_families_and_pairs_appear_only_in_test():
    train = [scenes.make_sample(0, "train", i).instruction for i in range(150)]
    test = [scenes.make_sample(0, "test", i).instruction for i in range(150)]
    assert not any(i.held_out for i in train)
    assert {i.family for i in train} <= set(scenes.FAMILIES)
    named = {i.text for i in train if i.family == "colour_shape"}
    assert not named & {f"the {c} {s}" for c, s in scenes.HELD_OUT_PAIRS}
    held = [i for i in test if i.held_out]
    assert 0.3 < len(held) / len(test) < 0.7
    assert {i.family for i in held} <= set(scenes.HELD_OUT_FAMILIES)


def test_written_splits_are_read_by_the_trainer_and_the_evaluator(tmp_path):
    paths = scenes.write_scenes(tmp_path / "s", {"train": 6, "test": 4}, seed=2)
    samples, report = load_training_samples(
        paths["train"], spec_for("wise_train"), policy_frame=scenes.CANVAS
    )
    assert report.loaded == 6 and not report.skipped
    rows = scenes.read_records(paths["train"])
    assert samples[0]["gt_box"] == pytest.approx(rows[0]["box"])  # the image is the frame
    items = list(read_dataset("test", paths["test"]))
    assert len(items) == 4 and all(isinstance(s, EvalSample) for s in items)
    for item, row in zip(items, scenes.read_records(paths["test"]), strict=True):
        assert item.query == row["instruction"]
        ys, xs = np.nonzero(item.target)
        assert [xs.min(), ys.min(), xs.max(), ys.max()] == row["box"]


def test_a_scenes_folder_is_rewritten_whole_and_a_foreign_one_refused(tmp_path):
    out = tmp_path / "s"
    scenes.write_scenes(out, {"train": 5}, seed=0)
    scenes.write_scenes(out, {"train": 2}, seed=0)
    assert len(list((out / "images").iterdir())) == 2  # no stale images
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        scenes.write_scenes(foreign, {"train": 1})
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_cli_writes_every_split(tmp_path, capsys):
    out = tmp_path / "cli"
    code = scenes.main(["--out", str(out), "--train", "3", "--val", "1", "--test", "2"])
    assert code == 0 and "test: 2 samples" in capsys.readouterr().out
    row = json.loads((out / "test.jsonl").read_text().splitlines()[0])
    assert Image.open(out / row["image"]).size == (scenes.CANVAS, scenes.CANVAS)
    assert scenes.main(["--out", str(out), "--size", "100"]) == 2


@pytest.mark.parametrize("size", [scenes.CANVAS, 2 * scenes.CANVAS])
def test_the_floor_pattern_names_the_cell_it_lies_in(size):
    floor = scenes.floor(size)
    cell = size // scenes.GRID
    token = 28  # a Qwen2.5-VL token's square; the pattern repeats within a cell's tokens
    patches = {
        (row, col): [
            floor[y : y + token, x : x + token].tobytes()
            for y in range(row * cell, (row + 1) * cell - token + 1, token)
            for x in range(col * cell, (col + 1) * cell - token + 1, token)
        ]
        for row in range(scenes.GRID)
        for col in range(scenes.GRID)
    }
    for where, tokens in patches.items():
        assert len(set(tokens)) == 1, f"cell {where} is not one pattern"
    assert len({tokens[0] for tokens in patches.values()}) == scenes.GRID**2
    # On the floor, not on the objects: an object's pixels are its colour alone.
    sample = scenes.make_sample(0, "train", 3, size)
    for obj, visible in zip(sample.scene.objects, sample.scene.visible, strict=True):
        assert len(np.unique(sample.scene.image[visible], axis=0)) == 1, obj.name
