"""report.py: aggregation of per-sample records, the Table 3 markdown, the Figure 4 plot, merging."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from support.eval_data import check_png

from wise_training import report as rep


def _record(
    model: str,
    mode: str,
    dataset: str,
    inter: int,
    union: int,
    tokens: int,
    status: str = "ok",
    is_sentence: bool | None = None,
    wall: float = 0.5,
) -> dict:
    return {
        "model": model,
        "mode": mode,
        "dataset": dataset,
        "sample_id": f"{inter}-{union}-{tokens}",
        "intersection": inter,
        "union": union,
        "iou": inter / union if union else 1.0,
        "reasoning_tokens": tokens,
        "status": status,
        "is_sentence": is_sentence,
        "wall_s": wall,
        "timings_ms": {"total_ms": 400.0},
    }


@pytest.fixture
def records() -> list[dict]:
    return [
        _record("base", "seg_zero", "reasonseg_val", 50, 100, 120, is_sentence=True),
        _record(
            "base", "seg_zero", "reasonseg_val", 0, 40, 100, "unparsable_answer", is_sentence=False
        ),
        _record("base", "seg_zero", "refcoco_testA", 90, 100, 160),
        _record("wise", "wise_s", "reasonseg_val", 80, 100, 24, is_sentence=True),
        _record("wise", "wise_s", "reasonseg_val", 30, 40, 20, is_sentence=False),
        _record("wise", "wise_s", "refcoco_testA", 95, 100, 30),
    ]


def test_summarize_numbers(records) -> None:
    rows = rep.summarize(records, {"reasonseg_val": 3})
    assert [(r["model"], r["mode"], r["dataset"]) for r in rows] == [
        ("base", "seg_zero", "reasonseg_val"),
        ("base", "seg_zero", "refcoco_testA"),
        ("wise", "wise_s", "reasonseg_val"),
        ("wise", "wise_s", "refcoco_testA"),
    ]
    base = rows[0]
    assert base["n"] == 2 and base["skipped"] == 3 and rows[1]["skipped"] == 0
    assert base["gIoU"] == pytest.approx((0.5 + 0.0) / 2)
    assert base["cIoU"] == pytest.approx(50 / 140)
    assert base["mean_tokens"] == pytest.approx(110.0)
    assert base["token_stats"]["max"] == 120 and base["token_stats"]["n"] == 2
    assert base["wall_time_s"] == pytest.approx(1.0)
    assert base["wall_time_per_sample_s"] == pytest.approx(0.5)
    assert base["pipeline_time_per_sample_s"] == pytest.approx(0.4)
    assert base["status_counts"] == {"ok": 1, "unparsable_answer": 1} and base["failed"] == 1
    assert base["splits"]["long"]["n"] == 1 and base["splits"]["long"]["cIoU"] == pytest.approx(0.5)
    assert base["splits"]["short"]["gIoU"] == 0.0
    assert "splits" not in rows[1]  # RefCOCO has no long/short flag
    wise = rows[2]
    assert wise["cIoU"] == pytest.approx(110 / 140) and wise["gIoU"] == pytest.approx(
        (0.8 + 0.75) / 2
    )


def test_markdown_table_has_table3_shape(records) -> None:
    rows = rep.summarize(records)
    table = rep.markdown_table({"results": rows, "convention": "lisa", "decoding": "greedy"})
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [
        "Method",
        "reasonseg_val #Tok",
        "reasonseg_val cIoU",
        "reasonseg_val gIoU",
        "refcoco_testA #Tok",
        "refcoco_testA cIoU",
        "refcoco_testA gIoU",
    ]
    assert set(lines[1].replace("|", "")) == {"-"}
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:5]]
    assert all(len(row) == len(header) for row in body)
    assert body[0] == ["base Seg-Zero", "110.0", "35.7", "25.0", "160.0", "90.0", "90.0"]
    assert body[1][0] == "wise WISE-S" and body[1][1] == "22.0" and body[1][2] == "78.6"
    # The "vs. baseline" row: token reduction factor and cIoU / gIoU differences, as in Table 3.
    assert body[2][0] == "vs. base Seg-Zero"
    assert (
        body[2][1] == f"({110 / 22:.1f}×)"
        and body[2][2] == f"({100 * (110 / 140 - 50 / 140):+.1f})"
    )
    assert "convention `lisa`" in table
    assert "| Split |" in table and "| long |" in table  # ReasonSeg long/short breakdown


def test_single_model_rows_are_named_by_mode() -> None:
    records = [_record("final", m, "rs", 1, 2, t) for m, t in (("wise", 30), ("wise_s", 20))]
    table = rep.markdown_table({"results": rep.summarize(records)})
    assert "| WISE |" in table and "| WISE-S |" in table and "vs." not in table


def test_plot_tokens_writes_png(tmp_path: Path, records) -> None:
    path = rep.plot_tokens(records, tmp_path / "tokens.png")
    check_png(path)
    # Degenerate inputs still plot: one sample, constant lengths, nothing at all.
    check_png(rep.plot_tokens([_record("m", "wise", "d", 1, 1, 5)], tmp_path / "one.png"))
    assert (rep.plot_tokens([], tmp_path / "none.png")).is_file()


def test_kde_integrates_to_one() -> None:
    import numpy as np

    values = np.array([10, 12, 15, 20, 22, 40], dtype=float)
    grid = np.linspace(-50, 120, 4000)
    density = rep._kde(values, grid)
    assert density is not None
    assert float(np.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-3)
    assert rep._kde(np.array([3.0, 3.0]), grid) is None


def test_merge_runs_cli(tmp_path: Path, records, capsys) -> None:
    for name, part in (("run_a", records[:3]), ("run_b", records[3:])):
        run = tmp_path / name
        rows = rep.summarize(part)
        rep.write_outputs(
            run,
            {"convention": "lisa", "results": rows, "datasets": {"reasonseg_val": {"skipped": 1}}},
            part,
        )
        (run / rep.PER_SAMPLE_NAME).write_text("".join(json.dumps(r) + "\n" for r in part))
    out = tmp_path / "merged"
    assert rep.main([str(tmp_path / "run_a"), str(tmp_path / "run_b"), "--out", str(out)]) == 0
    merged = json.loads((out / rep.REPORT_NAME).read_text())
    assert len(merged["results"]) == 4
    assert merged["results"][0]["skipped"] == 1
    assert len(rep.read_per_sample(out / rep.PER_SAMPLE_NAME)) == len(records)
    assert "vs. base Seg-Zero" in (out / rep.TABLE_NAME).read_text()
    check_png(out / rep.PLOT_NAME)
    assert "base Seg-Zero" in capsys.readouterr().out
    # Runs scored under different conventions are not merged.
    report_b = json.loads((tmp_path / "run_b" / rep.REPORT_NAME).read_text())
    report_b["convention"] = "seg_zero"
    (tmp_path / "run_b" / rep.REPORT_NAME).write_text(json.dumps(report_b))
    with pytest.raises(SystemExit) as exc:
        rep.main([str(tmp_path / "run_a"), str(tmp_path / "run_b"), "--out", str(out)])
    assert exc.value.code == 2


def test_infinite_reduction_when_no_tokens() -> None:
    records = [_record("b", "seg_zero", "d", 1, 2, 100), _record("w", "wise", "d", 1, 2, 0)]
    table = rep.markdown_table({"results": rep.summarize(records)})
    assert "(∞)" in table
    assert not math.isnan(rep.summarize(records)[1]["mean_tokens"])
