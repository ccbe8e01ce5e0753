"""Training data readers: Seg-Zero's 2k release format and JSONL, converted to the 840 frame."""

import json

import numpy as np
import pytest
from PIL import Image

from wise_perception.core.prompts import spec_for
from wise_training.data import (
    SampleError,
    load_training_samples,
    parse_solution,
    points_from_box,
    points_from_mask,
)

SPEC = spec_for("wise_train")


def test_segzero_solution_strings_parse():
    box, points = parse_solution("<box>(10,100),(200,210)</box><points>(30,110),(35,180)</points>")
    assert box == [10, 100, 200, 210] and points == [[30, 110], [35, 180]]
    with pytest.raises(SampleError, match="box"):
        parse_solution("<points>(1,2),(3,4)</points>")
    with pytest.raises(SampleError, match="points"):
        parse_solution("<box>(1,2),(3,4)</box>")
    with pytest.raises(SampleError, match="empty"):
        parse_solution("<box>(5,5),(5,9)</box><points>(1,2),(3,4)</points>")


def write_image(path, size=(320, 240)):
    image = np.full((size[1], size[0], 3), 128, np.uint8)
    Image.fromarray(image).save(path)


def test_jsonl_is_converted_to_the_policy_frame_by_hand(tmp_path):
    write_image(tmp_path / "a.png")  # 320 x 240
    mask = np.zeros((240, 320), np.uint8)
    mask[40:100, 20:200] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    rows = [
        {
            "image": "a.png",
            "instruction": "The cup.",
            "box": [32, 24, 160, 120],
            "points": [[64, 48], [128, 96]],
        },
        {"image": "a.png", "instruction": "the plate", "box": [0, 0, 80, 40]},
        {"image": "a.png", "instruction": "the mask", "box": [20, 40, 199, 99], "mask": "m.png"},
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    samples, report = load_training_samples(tmp_path / "d.jsonl", SPEC, system_prompt="sys")
    assert report.loaded == 3 and not report.skipped
    first = samples[0]
    # x * 840 / 320 = x * 2.625, y * 840 / 240 = y * 3.5
    assert first["gt_box"] == pytest.approx([84, 84, 420, 420])
    assert np.allclose(first["gt_points"], [[168, 168], [336, 336]])
    assert first["image"].size == (840, 840)
    assert first["prompt"][0]["role"] == "system"
    assert "Please find 'the cup'" in first["prompt"][1]["content"][1]["text"]
    # no points: quarter points along the box's long side
    assert np.allclose(samples[1]["gt_points"], [[20 * 2.625, 20 * 3.5], [60 * 2.625, 20 * 3.5]])
    # mask: both points inside the object
    for x, y in samples[2]["gt_points"]:
        px, py = x / 2.625, y / 3.5
        assert 20 <= px < 200 and 40 <= py < 100


def test_corrupt_samples_are_reported_and_skipped(tmp_path):
    write_image(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    lines = [
        json.dumps({"image": "a.png", "instruction": "ok", "box": [0, 0, 10, 10]}),
        json.dumps({"image": "missing.png", "instruction": "x", "box": [0, 0, 10, 10]}),
        json.dumps({"image": "broken.png", "instruction": "x", "box": [0, 0, 10, 10]}),
        json.dumps({"image": "a.png", "instruction": "x", "box": [10, 10, 5, 5]}),
        json.dumps({"image": "a.png", "instruction": "", "box": [0, 0, 10, 10]}),
        json.dumps(
            {"image": "a.png", "instruction": "x", "box": [0, 0, 10, 10], "points": [[1, 2]]}
        ),
        "{not json",
        "[1, 2]",
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(lines))
    samples, report = load_training_samples(tmp_path / "d.jsonl", SPEC)
    assert len(samples) == 1 and report.loaded == 1
    reasons = dict(report.skipped)
    assert len(reasons) == 7
    assert "unreadable image" in reasons["d.jsonl:2"] and "unreadable image" in reasons["d.jsonl:3"]
    assert "empty" in reasons["d.jsonl:4"] and "instruction" in reasons["d.jsonl:5"]
    assert "points" in reasons["d.jsonl:6"] and "invalid JSON" in reasons["d.jsonl:7"]


def test_segzero_parquet_release_format(tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    Image.fromarray(np.zeros((840, 840, 3), np.uint8)).save(buf, format="PNG")
    table = pa.table(
        {
            "image": [{"bytes": buf.getvalue(), "path": None}, {"bytes": b"junk", "path": None}],
            "problem": ["The red mug.", "x"],
            "solution": ["<box>(10,100),(200,210)</box><points>(30,110),(35,180)</points>"] * 2,
        }
    )
    pq.write_table(table, tmp_path / "train.parquet")
    samples, report = load_training_samples(tmp_path / "train.parquet", SPEC, limit=10)
    assert report.loaded == 1 and len(report.skipped) == 1
    assert samples[0]["gt_box"] == [10, 100, 200, 210]  # already in the 840 frame


def test_segzero_saved_dataset_dict_reads_its_train_split(tmp_path):
    """A ``DatasetDict.save_to_disk`` folder of the release (decoded PIL images, an ``id``
    column): the train split is read, and a folder with no data fails clearly."""
    import datasets

    from wise_training.tables import DatasetError

    solution = "<box>(10,100),(200,210)</box><points>(30,110),(35,180)</points>"
    image = Image.fromarray(np.zeros((420, 420, 3), np.uint8))
    split = {"id": ["a7"], "image": [image], "problem": ["The red mug."], "solution": [solution]}
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "problem": datasets.Value("string"),
            "solution": datasets.Value("string"),
        }
    )
    train = datasets.Dataset.from_dict(split, features=features)
    other = datasets.Dataset.from_dict({**split, "id": ["b1"], "problem": [""]}, features=features)
    datasets.DatasetDict({"train": train, "test": other}).save_to_disk(str(tmp_path / "saved"))
    samples, report = load_training_samples(tmp_path / "saved", SPEC)
    assert report.loaded == 1 and not report.skipped
    # 420 px source: the solution is in source pixels, doubled into the 840 frame.
    assert samples[0]["gt_box"] == [20, 200, 400, 420]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no parquet files or saved dataset"):
        load_training_samples(tmp_path / "empty", SPEC)


def test_missing_dataset_and_bad_format(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_training_samples(tmp_path / "nope.jsonl", SPEC)
    (tmp_path / "x.jsonl").write_text("")
    with pytest.raises(ValueError, match="format"):
        load_training_samples(tmp_path / "x.jsonl", SPEC, fmt="csv")


def test_point_helpers():
    assert points_from_box([0, 0, 100, 20]) == [[25, 10], [75, 10]]
    mask = np.zeros((50, 100), np.uint8)
    mask[10:40, 10:90] = 1
    (x1, y1), (x2, y2) = points_from_mask(mask)
    assert mask[int(y1), int(x1)] and mask[int(y2), int(x2)] and (x1, y1) != (x2, y2)
    with pytest.raises(SampleError):
        points_from_mask(np.zeros((5, 5)))


def test_synth_dataset_boxes_are_source_pixels_and_paths_relative(tmp_path):
    from pathlib import Path

    from wise_training.data import SYNTH_BOX_840, synth_dataset

    path = synth_dataset(tmp_path / "d", 8)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 8
    sizes = set()
    for row in rows:
        assert not Path(row["image"]).is_absolute()
        image = np.asarray(Image.open(path.parent / row["image"]).convert("RGB"))
        sizes.add(image.shape[:2])
        red = (image[..., 0] > 200) & (image[..., 1] < 50)
        ys, xs = np.nonzero(red)
        # the box is the red object, in the image's own pixels
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == row["box"]
        x1, y1, x2, y2 = row["box"]
        assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in row["points"])
    assert len(sizes) > 1
    samples, report = load_training_samples(path, SPEC)
    assert report.loaded == 8 and not report.skipped
    for sample in samples:  # where the smoke run's policy answers, in the 840 frame
        assert sample["gt_box"] == pytest.approx(list(SYNTH_BOX_840), abs=3)


def test_data_cli_writes_and_checks_a_dataset(tmp_path, capsys):
    from wise_training.data import main

    assert main(["synth", "--out", str(tmp_path / "d"), "--n", "3"]) == 0
    first = capsys.readouterr().out.splitlines()[1]
    assert json.loads(first)["image"] == "images/00000.png"
    assert main(["check", str(tmp_path / "d" / "train.jsonl")]) == 0  # every sample usable
    capsys.readouterr()
    with (tmp_path / "d" / "train.jsonl").open("a") as handle:
        handle.write('{"image": "gone.png"}\n')
    # a dataset with a sample training cannot use fails the check, and each is named once
    assert main(["check", str(tmp_path / "d" / "train.jsonl")]) == 1
    captured = capsys.readouterr()
    assert "3 samples loaded, 1 skipped" in captured.out
    assert captured.out.count("train.jsonl:4") == 1 and "train.jsonl:4" not in captured.err
    assert "1 of 4 samples cannot be used" in captured.err
    assert main(["synth", "--out", str(tmp_path / "e"), "--n", "0"]) == 2
    assert main(["check", str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_synth_into_a_used_folder_leaves_no_stale_images(tmp_path):
    from wise_training.data import synth_dataset

    synth_dataset(tmp_path / "d", 6)
    synth_dataset(tmp_path / "d", 2)
    assert sorted(p.name for p in (tmp_path / "d" / "images").iterdir()) == [
        "00000.png",
        "00001.png",
    ]
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="other files"):
        synth_dataset(tmp_path / "d", 2)


def test_boxes_and_points_outside_the_image_and_json_errors_name_the_file_line(tmp_path):
    write_image(tmp_path / "a.png")  # 320 x 240
    lines = [
        json.dumps({"image": "a.png", "instruction": "x", "box": [0, 0, 320, 240]}),
        json.dumps({"image": "a.png", "instruction": "x", "box": [10, 10, 900, 100]}),
        json.dumps(
            {
                "image": "a.png",
                "instruction": "x",
                "box": [0, 0, 50, 50],
                "points": [[5, 5], [5, 400]],
            }
        ),
        '{"image": "a.png", "instruction": oops}',
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(lines))
    samples, report = load_training_samples(tmp_path / "d.jsonl", SPEC)
    reasons = dict(report.skipped)
    assert len(samples) == 1
    assert "outside the 320x240 image" in reasons["d.jsonl:2"]
    assert "points" in reasons["d.jsonl:3"] and "outside" in reasons["d.jsonl:3"]
    assert "column" in reasons["d.jsonl:4"] and "line 1" not in reasons["d.jsonl:4"]


def test_exif_orientation_is_applied_to_training_images(tmp_path):
    """A camera JPEG stored landscape with EXIF "rotate 90": the sample is the upright image."""
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :40] = 255  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 clockwise to display
    Image.fromarray(pixels).save(tmp_path / "cam.jpg", exif=exif.tobytes(), quality=95)
    row = {"image": "cam.jpg", "instruction": "x", "box": [0, 0, 40, 80]}
    (tmp_path / "d.jsonl").write_text(json.dumps(row))
    samples, report = load_training_samples(tmp_path / "d.jsonl", SPEC, policy_frame=84)
    assert report.loaded == 1  # the box fits the upright 40 x 80 image, not the stored 80 x 40
    upright = np.asarray(samples[0]["image"]).mean(axis=2)
    assert upright[:40].mean() > 200 and upright[44:].mean() < 50  # white on top once rotated
