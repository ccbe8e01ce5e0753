"""`make reproduce` at its smallest (the ``ci`` preset: a tiny policy, a few scenes, one GRPO step
per config): the plumbing, never a learning outcome. Every stage runs through the product's code;
the outputs are there and well formed, and the exported policy loads in the pipeline and the
node. A second run keeps every stage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from support.training import run_module

from wise_dev.reproduce.base_policy import SIZES
from wise_dev.reproduce.presets import PRESETS

pytestmark = pytest.mark.slow

PRESET = PRESETS["ci"]


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("reproduce")
    proc = run_module("wise_dev.reproduce", "--preset", "ci", "--out", out, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_every_stage_ran_and_printed_the_table_with_timings(reproduction):
    out, stdout = reproduction
    stages = json.loads((out / "stages.json").read_text())
    expected = ["scenes", "init", "sft", "segmenter", *(f"grpo:{c}" for c in PRESET.configs)]
    assert list(stages) == [*expected, "evaluate"]
    assert all(s["wall_s"] > 0 and s["cpu_s"] > 0 for s in stages.values())
    assert "Table 3 at CPU scale" in stdout and "Stage timings:" in stdout
    assert "| Method | test #Tok | test cIoU | test gIoU |" in stdout


def test_one_report_with_every_row_labelled_by_its_training_config(reproduction):
    out, _ = reproduction
    report = json.loads((out / "eval" / "report.json").read_text())
    rows = {(r["model"], r["mode"]) for r in report["results"]}
    assert rows == {
        ("base", "seg_zero"),
        ("seg_zero", "seg_zero"),
        ("seg_zero", "wise_s"),
        ("wise", "wise"),
        ("wise", "wise_s"),
        ("wise", "wise_f"),
        ("baseline:largest", "seg_zero"),
        ("baseline:named", "seg_zero"),
    }
    assert {r["dataset"] for r in report["results"]} == {"test"}
    assert all(r["n"] == PRESET.scenes["test"] for r in report["results"])
    table = (out / "eval" / "table.md").read_text()
    assert "| seg_zero Seg-Zero |" in table and "| wise WISE-S |" in table
    assert "| baseline:named |" in table and "vs. base Seg-Zero" in table
    for name in ("tokens.png", "training_curves.png"):
        assert (out / "eval" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for config in PRESET.configs:
        events = list((out / "runs" / config).rglob("events.out.tfevents.*"))
        assert events, f"no TensorBoard run for {config}"
        steps = [json.loads(x)["step"] for x in (out / "runs" / config / "metrics.jsonl").open()]
        assert steps[0] == 1


def test_the_export_segments_through_the_pipeline(reproduction):
    from wise_perception.pipeline import WisePipeline
    from wise_training.scenes import read_records

    out, _ = reproduction
    record = read_records(out / "scenes" / "test.jsonl")[0]
    image = np.asarray(__import__("PIL.Image").Image.open(out / "scenes" / record["image"]))
    with WisePipeline.from_pretrained(out / "exports" / "wise", device="cpu") as pipeline:
        assert (
            pipeline.config.mode == "wise_s" and pipeline.config.policy_frame == PRESETS["ci"].frame
        )
        result = pipeline.segment(image[..., :3], record["instruction"])
    # a one-step policy writes what it writes; the pipeline answers with a status either way
    assert result.status.value in ("ok", "unparsable_answer"), result.error


@pytest.mark.ros
def test_the_export_loads_in_the_node(reproduction, tmp_path):
    pytest.importorskip("rclpy", reason="needs rclpy (the ros-wheels extra or a ROS 2 install)")
    from support.nodes import node_processes

    from wise_dev.node_client import node_command

    out, _ = reproduction
    params = {
        "policy_model": str(out / "exports" / "wise"),
        "device": "cpu",
        "dtype": "float32",
        "max_new_tokens": 32,
        "image_reliability": "reliable",
    }
    commands = {"/wise_repro": node_command(params, "/wise_repro")}
    domain = 51 + os.getpid() % 40
    with node_processes(commands, domain, tmp_path, active_timeout=90.0) as (clients, _):
        client = clients["/wise_repro"]
        rgb = np.full((224, 224, 3), 230, np.uint8)
        rgb[40:90, 60:110] = (212, 46, 46)
        client.publish_image(rgb, frame_id="scene")
        client.wait_for_frame("scene")
        client.command("the red square")
        _, result = client.next_result(timeout=60)
        assert result["status"] in ("ok", "unparsable_answer"), result["error"]
        assert result["frame_id"] == "scene"


def test_a_second_run_keeps_every_stage(reproduction):
    out, _ = reproduction
    proc = run_module("wise_dev.reproduce", "--preset", "ci", "--out", out, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done earlier, kept") == 5 + len(PRESET.configs)


def test_a_rerun_from_scratch_gives_the_same_answers_and_table(reproduction, tmp_path):
    # Seeded stages and a fixed thread count: the same preset on the same machine writes the same
    # policies, hence the same greedy answers (rationale, tokens, masks) and the same table.
    out, _ = reproduction
    proc = run_module("wise_dev.reproduce", "--preset", "ci", "--out", tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def answers(run: Path) -> list[tuple]:
        rows = (json.loads(line) for line in (run / "eval" / "per_sample.jsonl").open())
        keys = ("model", "mode", "sample_id", "status", "rationale", "reasoning_tokens")
        return [(*(r[k] for k in keys), r["intersection"], r["union"]) for r in rows]

    assert answers(tmp_path) == answers(out)
    assert (tmp_path / "eval" / "table.md").read_text() == (out / "eval" / "table.md").read_text()


def test_a_changed_setting_reruns_the_stage_that_reads_it_first_and_keeps_the_earlier_ones(
    tmp_path,
):
    import dataclasses

    from wise_dev.reproduce.presets import NOT_SETTINGS, STAGE_SETTINGS, Grpo, Preset
    from wise_dev.reproduce.run import Reproduction
    from wise_dev.reproduce.stages import StageRunner, fingerprint

    def keys(preset: Preset) -> dict[str, str]:
        stages = Reproduction(preset, tmp_path / "run", threads=1).stages()
        runner = StageRunner(tmp_path / "run", fingerprint)
        return dict(zip([s.name for s in stages], runner.keys(stages), strict=True))

    before = keys(PRESET)
    names = list(before)

    def rerun(**change: object) -> list[str]:
        after = keys(dataclasses.replace(PRESET, **change))
        return [n for n in names if after[n] != before[n]]

    assert names[:4] == ["scenes", "init", "sft", "segmenter"] and names[-1] == "evaluate"
    assert rerun(name="renamed") == []
    assert rerun(eval_batch=2) == ["evaluate"]
    assert rerun(grpo=Grpo(steps=2, max_completion_length=32)) == names[4:]
    assert rerun(segmenter_steps=3) == names[3:]
    assert rerun(sft_epochs=2.0) == names[2:]
    assert rerun(policy_size="mid") == names[1:]
    assert rerun(seed=1) == rerun(single_target_scenes={3: 3}) == names
    # every setting of a preset is read by some stage, or named as no stage's
    listed = [f for fields in STAGE_SETTINGS.values() for f in fields] + list(NOT_SETTINGS)
    assert sorted(listed) == sorted(f.name for f in dataclasses.fields(Preset))


def test_the_scene_demo_runs_the_cli_on_a_fresh_scene(reproduction, tmp_path):
    out, _ = reproduction
    proc = run_module(
        "wise_dev.reproduce.demo",
        *("--model", out / "exports" / "wise", "--out", tmp_path, "--scene", "1"),
        timeout=300,
    )
    # wise-segment's own codes: 0 found, 1 the model's answer was an error status (a one-step
    # policy may write anything); its files are written either way
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "true box" in proc.stdout
    result = json.loads((tmp_path / "scene_1_result.json").read_text())
    assert result["status"] == "ok" if proc.returncode == 0 else result["status"] != "ok"


def test_the_scene_demo_names_a_missing_export(tmp_path):
    proc = run_module("wise_dev.reproduce.demo", "--model", tmp_path / "nope", timeout=120)
    assert proc.returncode == 2 and "make reproduce" in proc.stderr


def test_the_packed_checkpoint_carries_its_segmenter(reproduction, tmp_path):
    from wise_perception.pipeline import WisePipeline

    out, _ = reproduction
    packed = tmp_path / "packed"
    proc = run_module(
        "wise_dev.reproduce.pack",
        *("--run", out, "--preset", "ci", "--out", packed, "--card-scenes", "4"),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((packed / "wise_manifest.json").read_text())["segmenter"] == "sam2"
    card = (packed / "README.md").read_text()
    assert "python -m wise_dev.reproduce --preset ci" in card
    assert f"text {SIZES[PRESET.policy_size].hidden} wide" in card
    # what it finds in fresh scenes, measured when packed: one row per family set
    assert "| referring |" in card and "| all |" in card
    with WisePipeline.from_pretrained(packed, device="cpu") as pipeline:  # no segmenter given
        loaded = pipeline.describe()["segmenter"]["name"]
    assert Path(loaded).resolve() == (packed / "sam2").resolve()


def test_the_policy_reads_images_normalised_to_the_scene_floor(reproduction):
    from transformers import AutoProcessor

    from wise_dev.reproduce.base_policy import PIXEL_STD
    from wise_training.scenes import FLOOR

    out, _ = reproduction
    processor = AutoProcessor.from_pretrained(out / "exports" / "wise")
    assert processor.image_processor.image_mean == pytest.approx([c / 255 for c in FLOOR])
    assert processor.image_processor.image_std == pytest.approx([PIXEL_STD] * 3)


def test_packing_an_unfinished_run_is_refused(tmp_path):
    (tmp_path / "stages.json").write_text('{"scenes": {}}')
    proc = run_module("wise_dev.reproduce.pack", "--run", tmp_path, "--out", tmp_path / "x")
    assert proc.returncode == 2 and "grpo:wise" in proc.stderr


def test_the_scene_demo_counts_fresh_scenes_localised(reproduction):
    out, _ = reproduction
    proc = run_module(
        "wise_dev.reproduce.demo", "--model", out / "exports" / "wise", "--localise", "4"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "of 4 fresh scenes (referring instructions) localised" in proc.stdout
    assert "largest object" in proc.stdout


@pytest.mark.parametrize("epochs", [1.0, 2.5])
def test_length_grouped_sft_order_reads_every_row_once_an_epoch_in_batches_of_one_length(epochs):
    from wise_dev.reproduce.base_policy import SftSettings, length_grouped_order

    rng = np.random.default_rng(7)
    # Two kinds of rows, as the SFT set has (short grounding answers, long reasoning chains).
    lengths = [
        int(v) for v in np.concatenate([rng.integers(50, 80, 400), rng.integers(400, 900, 400)])
    ]
    settings = SftSettings(epochs, batch_size=8, learning_rate=1e-3, seed=3)
    steps = int(np.ceil(epochs * len(lengths) / 8))
    order = length_grouped_order(lengths, settings, steps)

    assert len(order) == steps * 8
    for start in range(0, len(order) - len(lengths) + 1, len(lengths)):  # each whole epoch
        assert sorted(order[start : start + len(lengths)]) == list(range(len(lengths)))
    batches = np.array([lengths[i] for i in order]).reshape(-1, 8)
    padded = batches.max(axis=1).mean()  # the length a batch pads to
    mixed = np.array(lengths)[rng.permutation(len(lengths))].reshape(-1, 8).max(axis=1).mean()
    assert padded < 0.8 * mixed
    assert order == length_grouped_order(lengths, settings, steps)  # seeded
    assert order != length_grouped_order(lengths, SftSettings(epochs, 8, 1e-3, seed=4), steps)


def test_the_probe_measures_a_policy_of_the_run(reproduction, tmp_path):
    out, _ = reproduction
    numbers = tmp_path / "probe.json"
    proc = run_module("wise_dev.reproduce.probe", "--run", out, "--scenes", "4", "--json", numbers)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Grounding by name" in proc.stdout and "colour in cell" in proc.stdout
    results = json.loads(numbers.read_text())
    grounding = results["grounding"]
    assert 0 <= grounding["found"] <= grounding["parsed"] <= grounding["scenes"] <= 4
    assert 0 <= grounding["right_cell"] <= grounding["parsed"]
    for accuracy in results["token_features"].values():
        assert 0.0 <= accuracy["chance"] <= 1.0 and 0.0 <= accuracy["accuracy"] <= 1.0


def test_the_probe_names_a_missing_run(tmp_path):
    proc = run_module("wise_dev.reproduce.probe", "--run", tmp_path / "nope")
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_the_ridge_probe_reads_what_features_carry_and_nothing_else():
    from wise_dev.reproduce.probe import ridge_accuracy

    rng = np.random.default_rng(0)
    scenes, per_scene, classes = 50, 9, 3
    labels = rng.integers(classes, size=scenes * per_scene)
    groups = np.repeat(np.arange(scenes), per_scene)
    noise = rng.normal(size=(len(labels), 16))
    carried = noise.copy()
    carried[:, :classes] += 4.0 * np.eye(classes)[labels]  # the label, in three directions
    readable = ridge_accuracy(carried, [str(v) for v in labels], groups)
    unreadable = ridge_accuracy(noise, [str(v) for v in labels], groups)
    assert readable["accuracy"] > 0.95
    # Pure noise is read no better than the majority class (a few points of sampling either way).
    assert unreadable["accuracy"] < readable["chance"] + 0.15


def test_the_layout_cell_of_a_box_is_the_cell_of_its_centre():
    from wise_dev.reproduce.probe import layout_cell

    assert layout_cell([0, 0, 20, 20], 168) == 0
    assert layout_cell([120, 10, 160, 40], 168) == 2
    assert layout_cell([60, 120, 100, 160], 168) == 7
    assert layout_cell([150, 150, 400, 400], 168) == 8  # off the image: the nearest cell


def test_the_vision_tower_was_pretrained_before_sft(reproduction):
    out, stdout = reproduction
    record = json.loads((out / "init" / "vision_pretraining.json").read_text())
    assert set(record["held_out_token_accuracy"]) == {"colour", "shape", "column", "row"}
    assert record["settings"]["steps"] == PRESET.vision.steps
    assert "vision tower, held-out token accuracy" in stdout


def test_each_image_token_is_labelled_with_the_object_covering_most_of_it():
    from wise_dev.reproduce.vision_tower import CELL, MIN_COVER, label_names, token_labels
    from wise_training.scenes import make_scene

    names = label_names()
    scene = make_scene(np.random.default_rng(5))
    labels = token_labels(scene)
    side = scene.image.shape[0] // CELL
    assert labels.shape == (side * side, 4)
    for token, (colour, shape, column, row) in enumerate(labels):
        ty, tx = divmod(token, side)
        assert (column, row) == (tx * 3 // side, ty * 3 // side)
        window = (slice(ty * CELL, (ty + 1) * CELL), slice(tx * CELL, (tx + 1) * CELL))
        covered = [int(v[window].sum()) for v in scene.visible]
        if max(covered) < MIN_COVER * CELL * CELL:
            assert colour == 0 and shape == 0  # floor
        else:
            obj = scene.objects[int(np.argmax(covered))]
            assert names["colour"][colour] == obj.colour and names["shape"][shape] == obj.shape
    # Every object names some token: the lookup has a target.
    for obj in scene.objects:
        assert any(
            names["colour"][c] == obj.colour and names["shape"][s] == obj.shape
            for c, s, _, _ in labels
        )


def test_single_target_grounding_scenes_ask_for_one_object(reproduction):
    from wise_dev.reproduce.chains import grounding_example
    from wise_training.scenes import read_records

    out, _ = reproduction
    records = read_records(out / "scenes" / "grounding.jsonl")
    full = sum(PRESET.grounding_scenes.values())
    assert len(records) == full + sum(PRESET.single_target_scenes.values())
    assert all("ask" not in r for r in records[:full])
    for record in records[full:]:
        asked = record["objects"][record["ask"]]
        example = grounding_example(record, None, np.random.default_rng(0))
        request = example["prompt"][-1]["content"][-1]["text"]
        answer = example["completion"][0]["content"]
        assert request.endswith(f"{asked['colour']} {asked['shape']}.")
        assert answer == f"{asked['colour']} {asked['shape']} [{','.join(map(str, asked['box']))}]."
