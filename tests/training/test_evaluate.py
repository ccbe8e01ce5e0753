"""evaluate.py + datasets_eval.py: readers, scoring end to end, outputs.

Fast tests drive the evaluator with a scripted stand-in pipeline (exact, known masks); the
end-to-end tests run the real WisePipeline with the taught tiny policy (fixed box) and tiny
SAM2, and recompute gIoU/cIoU independently from the saved mask PNGs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.eval_data import (
    TAUGHT_COMPLETION,
    Truth,
    check_png,
    lisa_score,
    read_png_mask,
    rect_mask,
    rect_polygon,
    write_reasonseg,
    write_segzero_parquet,
)

from wise_perception.core.tokens import reasoning_tokens
from wise_perception.result import Result, Status, Timings
from wise_training import evaluate as ev
from wise_training.datasets_eval import (
    DatasetError,
    EvalSample,
    SkippedSample,
    eval_data_format,
    rasterize_reasonseg,
    read_dataset,
    read_reasonseg,
    read_segzero,
)
from wise_training.report import PER_SAMPLE_NAME, PLOT_NAME, REPORT_NAME, TABLE_NAME


@pytest.fixture
def reasonseg(tmp_path: Path) -> tuple[Path, dict[str, Truth]]:
    folder = tmp_path / "ReasonSeg" / "val"
    return folder, write_reasonseg(folder)


@pytest.fixture
def refcoco(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path / "refcoco_testA" / "data" / "test-00000-of-00001.parquet"
    return path, write_segzero_parquet(path)


# --------------------------------------------------------------------------- readers


def test_reasonseg_reader_masks_flags_and_skips(reasonseg) -> None:
    folder, truths = reasonseg
    assert eval_data_format(folder) == "reasonseg"
    items = list(read_reasonseg("rs", folder))
    samples = [i for i in items if isinstance(i, EvalSample)]
    skipped = [i for i in items if isinstance(i, SkippedSample)]
    assert [s.sample_id for s in samples] == ["a#0", "a#1", "b#0", "c#0"]
    assert sorted(s.sample_id for s in skipped) == ["d", "e"]
    assert (
        "JSON" in next(s for s in skipped if s.sample_id == "d").reason
        or "Expecting" in next(s for s in skipped if s.sample_id == "d").reason
    )
    assert "no image" in next(s for s in skipped if s.sample_id == "e").reason
    for sample in samples:
        truth = truths[sample.sample_id]
        assert sample.image.dtype == np.uint8 and sample.image.shape[:2] == truth.target.shape
        assert np.array_equal(sample.target, truth.target), sample.sample_id
        ignore = sample.ignore if sample.ignore is not None else np.zeros_like(sample.target)
        assert np.array_equal(ignore, truth.ignore), sample.sample_id
        assert sample.is_sentence is truth.is_sentence
    assert (
        samples[0].query == "what would you use to hold soup?" and samples[1].query == "the bowl."
    )
    assert samples[3].gt_area == 0  # the empty-target case
    assert samples[0].image is samples[1].image  # one decode per image


def test_rasterization_draws_larger_polygons_first() -> None:
    # A small target inside a large ignore region stays target (drawn after it) ...
    shapes = [
        {"label": "target", "points": rect_polygon(4, 4, 6, 6)},
        {"label": "ignore", "points": rect_polygon(0, 0, 9, 9)},
    ]
    target, ignore = rasterize_reasonseg(shapes, 12, 12)
    assert np.array_equal(target, rect_mask(12, 12, 4, 4, 6, 6))
    assert np.array_equal(ignore, rect_mask(12, 12, 0, 0, 9, 9) & ~target)
    # ... float coordinates are truncated like np.array(points, dtype=int32), and bad shapes raise.
    target, _ = rasterize_reasonseg([{"label": "x", "points": rect_polygon(1, 1, 3, 3)}], 5, 5)
    same, _ = rasterize_reasonseg(
        [{"label": "x", "points": [[1.9, 1.2], [3.7, 1.0], [3.2, 3.9], [1.5, 3.1]]}], 5, 5
    )
    assert np.array_equal(target, same)
    for bad in (
        [{"label": "t", "points": [[1, "a"]]}],
        [{"label": "t"}],
        "shapes",
        [{"label": "t", "points": [[float("nan"), 0], [1, 1], [2, 2]]}],
    ):
        with pytest.raises(ValueError):
            rasterize_reasonseg(bad, 5, 5)


def test_segzero_parquet_reader(refcoco, tmp_path: Path) -> None:
    path, truths = refcoco
    for location in (path, path.parent.parent):  # a parquet file, or a hub snapshot folder
        assert eval_data_format(location) == "segzero"
        items = list(read_dataset("refcoco_testA", location))
        samples = [i for i in items if isinstance(i, EvalSample)]
        skipped = [i for i in items if isinstance(i, SkippedSample)]
        assert [s.sample_id for s in samples] == list(truths)
        assert len(skipped) == 1 and "differ in size" in skipped[0].reason
        for sample in samples:
            assert np.array_equal(sample.target, truths[sample.sample_id])
            assert sample.image.shape[:2] == sample.target.shape and sample.ignore is None
        assert samples[0].image_id == "1000" and samples[1].ann_id == "5001"
        assert samples[1].query == "the object number 1" and samples[0].is_sentence is None
    # A save_to_disk folder of the same data reads the same.
    import datasets

    saved = tmp_path / "saved"
    datasets.Dataset.from_parquet(str(path)).save_to_disk(str(saved))
    samples = [i for i in read_segzero("r", saved) if isinstance(i, EvalSample)]
    assert [s.sample_id for s in samples] == list(truths)
    assert all(np.array_equal(s.target, truths[s.sample_id]) for s in samples)


def test_unreadable_datasets_raise_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        eval_data_format(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError):
        eval_data_format(tmp_path / "empty")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError):
        list(read_segzero("x", broken))


# --------------------------------------------------------------------------- scripted pipeline


class ScriptedPipeline:
    """Stand-in WisePipeline: a fixed box mask; 'unicorn' commands fail to parse; #Tok 5 in
    wise_s, else 11 (the mode is per request, ``mode`` the default)."""

    def __init__(self, mode: str = "wise_s", fail_batches: bool = False) -> None:
        self.mode, self.fail_batches, self.closed, self.batches = mode, fail_batches, False, []

    def segment(self, image_rgb: np.ndarray, command: str, *, mode: str | None = None) -> Result:
        mode = mode or self.mode
        h, w = image_rgb.shape[:2]
        if "unicorn" in command:
            return Result(
                command=command,
                status=Status.UNPARSABLE_ANSWER,
                error="missing_answer_tag",
                reasoning_tokens=7,
                completion="<think> no idea </think>",
            )
        tokens = 5 if mode == "wise_s" else 11
        return Result(
            command=command,
            status=Status.OK,
            mask=rect_mask(h, w, 10, 10, 30, 25),
            reasoning_tokens=tokens,
            completion="<think> ... </think><answer>{}</answer>",
            timings=Timings(total=0.25),
            mode=mode,
        )

    def segment_batch(
        self, images: list[np.ndarray], commands: list[str], *, mode: str | None = None
    ) -> list[Result]:
        self.batches.append((mode, len(images)))
        if self.fail_batches:
            raise RuntimeError("out of memory")
        return [self.segment(i, c, mode=mode) for i, c in zip(images, commands, strict=True)]

    def close(self) -> None:
        self.closed = True


def test_run_dataset_yields_skips_and_scored_outcomes_in_order(reasonseg) -> None:
    """The runner alone: skipped samples pass through, batches are filled in reading order, a
    failed result is an empty prediction, each outcome makes its per-sample record, and
    ``limit`` counts evaluated samples."""
    from wise_training.eval_runner import Outcome, run_dataset

    folder, truths = reasonseg
    pipeline = ScriptedPipeline()
    items = list(run_dataset(pipeline, read_reasonseg("rs", folder), batch_size=3, mode="wise_s"))
    outcomes = [i for i in items if isinstance(i, Outcome)]
    assert [o.sample.sample_id for o in outcomes] == ["a#0", "a#1", "b#0", "c#0"]
    assert sorted(i.sample_id for i in items if isinstance(i, SkippedSample)) == ["d", "e"]
    assert pipeline.batches == [("wise_s", 3), ("wise_s", 1)]
    unicorn = outcomes[3]  # "the unicorn": the answer does not parse
    assert unicorn.prediction is None and unicorn.error == "missing_answer_tag"
    assert (unicorn.score.intersection, unicorn.score.union, unicorn.score.iou) == (0, 0, 1.0)
    record = outcomes[2].record("ckpt", "wise_s")
    pred = rect_mask(40, 50, 10, 10, 30, 25)
    assert record["intersection"] == int((pred & truths["b#0"].target).sum())
    assert (record["model"], record["mode"], record["status"], record["error"]) == (
        "ckpt",
        "wise_s",
        "ok",
        "",
    )
    assert record["reasoning_tokens"] == 5 and record["timings_ms"]["total_ms"] == 250.0
    limited = run_dataset(ScriptedPipeline(), read_reasonseg("rs", folder), batch_size=3, limit=2)
    assert [o.sample.sample_id for o in limited] == ["a#0", "a#1"]


def both_sets_in_two_modes(
    policy: str, reasonseg: Path, refcoco: Path, out: Path, *extra: str
) -> list[str]:
    """evaluate's arguments: ReasonSeg ("rs") and RefCOCO, modes wise and wise_s, masks saved."""
    datasets = ["--dataset", f"rs={reasonseg}", "--dataset", f"refcoco_testA={refcoco}"]
    modes = ["--modes", "wise", "wise_s"]
    return ["--policy", policy, *datasets, *modes, "--save-masks", "--out", str(out), *extra]


def _recompute(
    out: Path, truths: dict[str, Truth], mode: str, dataset: str = "rs"
) -> tuple[float, float, list[dict]]:
    records = [json.loads(line) for line in (out / PER_SAMPLE_NAME).read_text().splitlines()]
    mine = [r for r in records if r["mode"] == mode and r["dataset"] == dataset]
    inters, unions, ious = [], [], []
    for r in mine:
        pred = read_png_mask(out / r["mask_file"])
        inter, union, iou = lisa_score(pred, truths[r["sample_id"]])
        assert (r["intersection"], r["union"]) == (inter, union), r["sample_id"]
        assert r["iou"] == pytest.approx(iou)
        inters.append(inter), unions.append(union), ious.append(iou)
    return float(np.mean(ious)), sum(inters) / sum(unions), mine


def test_evaluate_with_scripted_pipeline(reasonseg, refcoco, tmp_path: Path, capsys) -> None:
    folder, truths = reasonseg
    pipelines: list[ScriptedPipeline] = []

    def factory(config, policy):
        assert policy.label == "ckpt" and config.convention == "lisa"
        pipelines.append(ScriptedPipeline())
        return pipelines[-1]

    out = tmp_path / "out"
    argv = both_sets_in_two_modes("ckpt=/models/x", folder, refcoco[0], out, "--batch-size", "3")
    assert ev.main(argv, factory=factory) == 0
    # One policy, loaded once, evaluated in both modes: 4 ReasonSeg samples, then 2 RefCOCO,
    # batched by 3, in each mode.
    assert len(pipelines) == 1 and pipelines[0].closed
    assert pipelines[0].batches == [(m, n) for m in ("wise", "wise_s") for n in (3, 1, 2)]
    report = json.loads((out / REPORT_NAME).read_text())
    assert [(p["model"], p["modes"]) for p in report["pipelines"]] == [("ckpt", ["wise", "wise_s"])]
    assert report["convention"] == "lisa" and report["decoding"] == "greedy"
    assert report["datasets"]["rs"]["skipped"] == 2 and report["datasets"]["rs"]["samples"] == 4
    assert {s["id"] for s in report["datasets"]["rs"]["skipped_samples"]} == {"d", "e"}
    assert report["datasets"]["refcoco_testA"]["skipped"] == 1
    rows = {(r["mode"], r["dataset"]): r for r in report["results"]}
    assert len(rows) == 4
    for mode, tokens in (("wise", 11), ("wise_s", 5)):
        giou, ciou, records = _recompute(out, truths, mode)
        row = rows[(mode, "rs")]
        assert row["n"] == 4 and row["skipped"] == 2
        assert row["gIoU"] == pytest.approx(giou) and row["cIoU"] == pytest.approx(ciou)
        assert row["mean_tokens"] == pytest.approx((3 * tokens + 7) / 4)
        assert row["status_counts"] == {"ok": 3, "unparsable_answer": 1}
        assert row["wall_time_s"] >= 0 and row["pipeline_time_per_sample_s"] == pytest.approx(
            0.25 * 3 / 4
        )
        assert set(row["splits"]) == {"long", "short"} and row["splits"]["long"]["n"] == 2
        # The unparsable, empty-target sample: no mask -> intersection 0, union = GT area (0): IoU 1.
        failed = next(r for r in records if r["status"] == "unparsable_answer")
        assert (failed["intersection"], failed["union"], failed["iou"]) == (0, 0, 1.0)
    # Known numbers for sample b (two targets, no ignore) against the box (10,10)-(30,25).
    b = next(r for r in records if r["sample_id"] == "b#0")
    pred = rect_mask(40, 50, 10, 10, 30, 25)
    assert b["intersection"] == int((pred & truths["b#0"].target).sum()) == 11 * 16 + 1 * 6
    ref = rows[("wise", "refcoco_testA")]
    assert ref["n"] == 2 and ref["skipped"] == 1 and "splits" not in ref
    table = (out / TABLE_NAME).read_text()
    assert "| WISE |" in table and "| WISE-S |" in table and "rs cIoU" in table
    check_png(out / PLOT_NAME)
    assert "convention: lisa" in capsys.readouterr().out


def test_unparsable_answer_scores_gt_area_as_union(reasonseg, tmp_path: Path) -> None:
    folder, truths = reasonseg

    class NeverParses(ScriptedPipeline):
        def segment(self, image_rgb, command, *, mode=None):
            return Result(command=command, status=Status.UNPARSABLE_ANSWER, error="invalid_json")

    for convention in ("lisa", "seg_zero"):
        out = tmp_path / convention
        config = ev.EvalConfig(
            policies=[ev.PolicySpec("p", "x")],
            datasets=[ev.DatasetSpec("rs", str(folder), "reasonseg")],
            out=out,
            modes=["seg_zero"],
            convention=convention,
        )
        report = ev.evaluate(config, factory=lambda c, p: NeverParses())
        records = [json.loads(line) for line in (out / PER_SAMPLE_NAME).read_text().splitlines()]
        for r in records:
            truth = truths[r["sample_id"]]
            gt = truth.target if convention == "lisa" else truth.target | truth.ignore
            assert r["intersection"] == 0 and r["union"] == int(gt.sum())
        row = report["results"][0]
        assert row["cIoU"] == 0.0
        # Empty target + no prediction: IoU 1 under LISA's convention, 0 under Seg-Zero's.
        assert row["gIoU"] == pytest.approx(0.25 if convention == "lisa" else 0.0)


def test_batch_failure_falls_back_to_single_samples(reasonseg, tmp_path: Path) -> None:
    folder, _ = reasonseg

    class Flaky(ScriptedPipeline):
        def segment(self, image_rgb, command, *, mode=None):
            if "cup" in command:
                raise RuntimeError("boom")
            return super().segment(image_rgb, command, mode=mode)

    config = ev.EvalConfig(
        policies=[ev.PolicySpec("p", "x")],
        datasets=[ev.DatasetSpec("rs", str(folder), "reasonseg")],
        out=tmp_path / "o",
        batch_size=4,
        limit=3,
    )
    report = ev.evaluate(config, factory=lambda c, p: Flaky(fail_batches=True))
    row = report["results"][0]
    assert row["n"] == 3  # --limit counts evaluated samples
    assert row["status_counts"] == {"internal_error": 1, "ok": 2}


def test_cli_argument_errors(tmp_path: Path, reasonseg) -> None:
    folder, _ = reasonseg
    base = ["--policy", "p", "--out", str(tmp_path / "o")]
    for extra in (
        ["--dataset", str(tmp_path / "missing")],
        ["--dataset", f"a={folder}", "--dataset", f"a={folder}"],
        ["--dataset", str(folder), "--batch-size", "0"],
        ["--dataset", str(folder), "--format", "val=coco"],
        ["--dataset", str(folder), "--modes", "wise_train"],
    ):
        with pytest.raises(SystemExit) as exc:
            ev.main(base + extra, factory=lambda c, p: ScriptedPipeline())
        assert exc.value.code == 2, extra


def test_project_jsonl_is_read_with_its_masks_and_bad_lines_skipped(tmp_path: Path) -> None:
    from PIL import Image

    image = np.zeros((20, 30, 3), np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    mask = np.zeros((20, 30), np.uint8)
    mask[5:9, 10:20] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    lines = [
        json.dumps(
            {"image": "a.png", "mask": "m.png", "instruction": "the bar", "box": [1, 2, 3, 4]}
        ),
        json.dumps({"image": "a.png", "instruction": "no mask"}),
        json.dumps({"image": "a.png", "mask": "small.png", "instruction": "wrong size"}),
        "{broken",
        json.dumps({"image": str(tmp_path / "a.png"), "mask": "m.png", "instruction": "absolute"}),
    ]
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert eval_data_format(path) == "jsonl"
    items = list(read_dataset("mine", path))
    samples = [i for i in items if isinstance(i, EvalSample)]
    skipped = {i.sample_id: i.reason for i in items if isinstance(i, SkippedSample)}
    assert [s.query for s in samples] == ["the bar", "absolute"]
    assert samples[0].sample_id == "set-000001" and samples[0].gt_area == 40
    assert "'mask'" in skipped["set-000002"] and "differ in size" in skipped["set-000003"]
    assert "column" in skipped["set-000004"]


def test_each_policy_can_have_its_own_modes(reasonseg, tmp_path: Path) -> None:
    folder, _ = reasonseg
    opened: list[str] = []

    def factory(config, policy):
        opened.append(policy.label)
        return ScriptedPipeline()

    argv = ["--policy", "a=/m/a", "--policy", "b=/m/b", "--dataset", f"rs={folder}"]
    argv += ["--modes", "wise", "--policy-modes", "b=seg_zero,wise_s", "--out", str(tmp_path)]
    assert ev.main(argv, factory=factory) == 0
    assert opened == ["a", "b"]  # each policy loaded once, whatever its modes
    report = json.loads((tmp_path / REPORT_NAME).read_text())
    rows = [(r["model"], r["mode"]) for r in report["results"]]
    assert rows == [("a", "wise"), ("b", "seg_zero"), ("b", "wise_s")]
    for bad in ("c=wise", "b=", "b=wise_train"):
        with pytest.raises(SystemExit):
            ev.main([*argv[:-4], "--policy-modes", bad, "--out", str(tmp_path)], factory=factory)


# --------------------------------------------------------------------------- real pipeline


def test_end_to_end_with_taught_policy(
    eval_taught_policy_dir, tiny_sam2_dir, reasonseg, refcoco, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    folder, truths = reasonseg
    out = tmp_path / "e2e"
    argv = both_sets_in_two_modes(
        str(eval_taught_policy_dir),
        folder,
        refcoco[0],
        out,
        *("--segmenter", str(tiny_sam2_dir), "--batch-size", "2"),
        *("--device", "cpu", "--dtype", "float32"),
    )
    assert ev.main(argv) == 0
    report = json.loads((out / REPORT_NAME).read_text())
    assert [p["modes"] for p in report["pipelines"]] == [["wise", "wise_s"]]  # loaded once
    rows = {(r["mode"], r["dataset"]): r for r in report["results"]}
    expected_tokens = reasoning_tokens(
        TAUGHT_COMPLETION, AutoTokenizer.from_pretrained(eval_taught_policy_dir)
    )
    assert expected_tokens > 0
    for mode in ("wise", "wise_s"):
        giou, ciou, records = _recompute(out, truths, mode)
        row = rows[(mode, "rs")]
        assert row["n"] == 4 and row["skipped"] == 2 and row["status_counts"] == {"ok": 4}
        assert row["gIoU"] == pytest.approx(giou) and row["cIoU"] == pytest.approx(ciou)
        assert row["mean_tokens"] == pytest.approx(expected_tokens)
        assert row["token_stats"]["min"] == row["token_stats"]["max"] == expected_tokens
        assert all(r["completion"].strip() == TAUGHT_COMPLETION for r in records)
        assert row["wall_time_s"] > 0
        # RefCOCO samples: recompute from the saved masks with the Seg-Zero-format truth.
        ref = [json.loads(line) for line in (out / PER_SAMPLE_NAME).read_text().splitlines()]
        ref = [r for r in ref if r["mode"] == mode and r["dataset"] == "refcoco_testA"]
        assert len(ref) == 2
        inter = union = 0
        for r in ref:
            pred, gt = read_png_mask(out / r["mask_file"]), refcoco[1][r["sample_id"]]
            inter, union = inter + int((pred & gt).sum()), union + int((pred | gt).sum())
        assert rows[(mode, "refcoco_testA")]["cIoU"] == pytest.approx(
            inter / union if union else 0.0
        )
    table = (out / TABLE_NAME).read_text()
    assert table.startswith("| Method | rs #Tok | rs cIoU | rs gIoU | refcoco_testA #Tok |")
    assert f"| WISE | {expected_tokens:.1f} |" in table
    check_png(out / PLOT_NAME)


def test_random_policy_answers_are_unparsable(
    tiny_policy_dir, tiny_sam2_dir, reasonseg, tmp_path: Path
) -> None:
    folder, truths = reasonseg
    out = tmp_path / "random"
    argv = [
        "--policy",
        str(tiny_policy_dir),
        "--segmenter",
        str(tiny_sam2_dir),
        "--dataset",
        f"rs={folder}",
        "--modes",
        "seg_zero",
        "--limit",
        "3",
        "--max-new-tokens",
        "8",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--out",
        str(out),
    ]
    ev.main(argv)
    records = [json.loads(line) for line in (out / PER_SAMPLE_NAME).read_text().splitlines()]
    assert len(records) == 3
    for r in records:
        assert r["status"] == "unparsable_answer", r["completion"]
        assert r["intersection"] == 0 and r["union"] == int(truths[r["sample_id"]].target.sum())
    row = json.loads((out / REPORT_NAME).read_text())["results"][0]
    assert row["cIoU"] == 0.0 and row["failed"] == 3


def test_a_mode_the_checkpoint_cannot_be_prompted_in_fails_before_any_sample(
    eval_taught_policy_dir, tiny_sam2_dir, reasonseg, tmp_path: Path, capsys
) -> None:
    """A checkpoint exported for ``wise`` without a brevity instruction asked for ``wise_s``:
    the one load of the policy finds it (exit 2, saying why) before a sample runs."""
    import shutil

    from wise_perception.core.manifest import Manifest, write_manifest

    policy = tmp_path / "wise-no-brevity"
    shutil.copytree(eval_taught_policy_dir, policy)
    write_manifest(policy, Manifest(prompt_mode="wise", brevity=None, segmenter=str(tiny_sam2_dir)))
    out = tmp_path / "out"
    argv = ["--policy", str(policy), "--dataset", f"rs={reasonseg[0]}", "--modes", "wise", "wise_s"]
    argv += ["--device", "cpu", "--out", str(out)]
    assert ev.main(argv) == 2
    error = capsys.readouterr().err
    assert "mode wise_s" in error and "brevity" in error
    assert (out / PER_SAMPLE_NAME).read_text() == ""
