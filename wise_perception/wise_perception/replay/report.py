"""The replay report: one side-by-side view of every policy replayed on one bag.

``report.json`` (everything, for scripts), ``report.md`` (the same, to read) and
``contact_sheet.png`` (one row per command, one column per policy: the overlay of each
result, or a tile naming the status where there was no image to draw on). Per policy:
statuses, per-stage latency (the pipeline's own timings, measured on this machine: the
one thing in a replay that is not deterministic), #Tok, and with labels, gIoU and cIoU with
the evaluator's implementation (:mod:`wise_perception.core.metrics`): mask labels against the
predicted mask, box labels against the predicted boxes (both as pixel regions).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from ..core.metrics import SegmentationScores, box_mask, score_masks
from .files import Label, label_key
from .runner import RunSummary

STAGES = (
    "preprocess_ms",
    "policy_prefill_ms",
    "policy_decode_ms",
    "segmenter_encode_ms",
    "segmenter_decode_ms",
    "total_ms",
)
TILE_W, TILE_H, CAPTION_H, HEADER_H = 320, 240, 34, 30
DEFAULT_SHEET_ROWS = 40


def write_report(
    out: Path,
    runs: list[RunSummary],
    labels: dict[str, Label],
    *,
    bag_start_ns: int,
    inputs: dict[str, Any],
    sheet_rows: int = DEFAULT_SHEET_ROWS,
) -> dict[str, Any]:
    """Write report.json, report.md and contact_sheet.png into ``out``; returns the report."""
    by_policy = {run.label: {r["index"]: r for r in run.records} for run in runs}
    tracks = {run.label: _tracks_by_command(run) for run in runs}
    indexes = sorted({i for records in by_policy.values() for i in records})
    rows, unmatched, scores = [], set(labels), {run.label: _Scores() for run in runs}
    for index in indexes:
        any_record = next(by_policy[p][index] for p in by_policy if index in by_policy[p])
        key = label_key(any_record["result"]["id"], index)
        label = labels.get(key)
        unmatched.discard(key)
        row: dict[str, Any] = {
            "index": index,
            "id": any_record["result"]["id"],
            "command": any_record["result"]["command"],
            "at_s": round((any_record["received_ns"] - bag_start_ns) / 1e9, 3),
            "label": label.source if label else None,
            "policies": {},
        }
        for run in runs:
            record = by_policy[run.label].get(index)
            if record is None:
                continue
            entry = _entry(record, tracks[run.label].get(index))
            if label is not None:
                entry.update(scores[run.label].add(run, record, label))
            row["policies"][run.label] = entry
        pairings = {json.dumps(e["frame"]) for e in row["policies"].values()}
        row["same_frame"] = len(pairings) <= 1
        rows.append(row)
    report = {
        "inputs": inputs,
        "policies": {run.label: _summary(run, scores[run.label]) for run in runs},
        "labels_without_command": sorted(labels[k].source for k in unmatched),
        "commands": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(_markdown(report), encoding="utf-8")
    write_contact_sheet(out / "contact_sheet.png", runs, rows, sheet_rows)
    return report


# --------------------------------------------------------------------------- per command
def _tracks_by_command(run: RunSummary) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for line in run.tracks:
        out.setdefault(line["index"], []).append(line)
    return out


def _track_entry(result: dict[str, Any], lines: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A tracked command's track: how many frames it followed and how it ended (its last
    ``track`` message; ``tracking``: still running when the bag ended)."""
    if not lines:
        return {**result["track"], "tracked_frames": 0}
    last = lines[-1]["track"]
    return {
        "state": last["state"],
        "error": last["error"],
        "tracked_frames": last["tracked_frames"],
        "refused_frames": last["refused_frames"],
        "regrounded": last["regrounded"],
        "last_frame": {"frame_id": last["frame_id"], "stamp": last["stamp"]},
    }


def _entry(record: dict[str, Any], tracks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    result = record["result"]
    track = _track_entry(result, tracks) if "track" in result else None
    return {
        "status": result["status"],
        "error": result["error"],
        "frame": {"frame_id": result["frame_id"], "stamp": result["stamp"]}
        if record["frame"]
        else None,
        "reasoning_tokens": result["reasoning_tokens"],
        "rationale": result["rationale"],
        "boxes": [o["box"] for o in result["objects"]],
        "mask_pixels": result["mask_pixels"],
        "image_age_ms": result["node"].get("image_age_ms"),
        "pipeline_ms": result["node"].get("pipeline_ms"),
        **({"track": track} if track is not None else {}),
    }


class _Scores:
    """One policy's labelled commands, scored as the evaluator scores (core.metrics)."""

    def __init__(self) -> None:
        self.mask, self.box = SegmentationScores(), SegmentationScores()
        self.problems: list[str] = []

    def add(self, run: RunSummary, record: dict[str, Any], label: Label) -> dict[str, Any]:
        result = record["result"]
        width, height = result["image_size"]
        ok = result["status"] == "ok"
        if label.mask is not None:
            target = label.mask
            predicted = run.folder.picture(record["mask"], color=False) if ok else None
            if ok and (predicted is None or predicted.shape != target.shape):
                found = "no mask file" if predicted is None else f"a {predicted.shape} mask"
                problem = f"{label.source}: label mask {target.shape} vs {found}: not scored"
                self.problems.append(problem)
                return {"score_problem": problem}
            sample = score_masks(None if predicted is None else predicted > 0, target)
            self.mask.add(sample)
            return {"iou": sample.iou, "label_kind": "mask"}
        assert label.box is not None
        x2, y2 = label.box[2], label.box[3]
        shape = (max(height, int(np.ceil(y2)) + 1), max(width, int(np.ceil(x2)) + 1))
        target = box_mask(label.box, shape)
        predicted = None
        if ok:
            predicted = np.zeros(shape, dtype=bool)
            for obj in result["objects"]:
                predicted |= box_mask(obj["box"], shape)
        sample = score_masks(predicted, target)
        self.box.add(sample)
        return {"iou": sample.iou, "label_kind": "box"}

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.mask.samples:
            out["mask"] = self.mask.as_dict()
        if self.box.samples:
            out["box"] = self.box.as_dict()
        if self.problems:
            out["problems"] = self.problems
        return out


# --------------------------------------------------------------------------- per policy
def _summary(run: RunSummary, scores: _Scores) -> dict[str, Any]:
    results = [r["result"] for r in run.records]
    counts: dict[str, int] = {}
    for result in results:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    served = [r for r in results if "pipeline_ms" in r["node"]]
    latency = {stage: _stats([r["timings"][stage] for r in served]) for stage in STAGES if served}
    if served:
        latency["pipeline_ms"] = _stats([r["node"]["pipeline_ms"] for r in served])
    ages = [r["node"]["image_age_ms"] for r in results if "image_age_ms" in r["node"]]
    manifest = run.folder.read_manifest()
    tracked = [r for r in results if "track" in r]
    ends: dict[str, int] = {}
    for lines in _tracks_by_command(run).values():
        ends[lines[-1]["track"]["state"]] = ends.get(lines[-1]["track"]["state"], 0) + 1
    track_ms = [t["track"]["track_ms"] for t in run.tracks if t["kind"] == "tracked"]
    return {
        "folder": str(run.folder.root),
        "output_bag": str(run.folder.bag),
        "commands": len(results),
        "statuses": dict(sorted(counts.items())),
        "latency_ms": latency,
        "reasoning_tokens": _stats([r["reasoning_tokens"] for r in served]),
        "image_age_ms": _stats(ages),
        "tracking": {
            "commands": len(tracked),
            "started": sum(r["track"]["state"] == "tracking" for r in tracked),
            "tracked_frames": len(track_ms),
            "track_ms": _stats(track_ms),
            "ends": dict(sorted(ends.items())),
        },
        "scores": scores.as_dict(),
        "complete": bool(manifest.get("complete")),
        "ended_early": run.ended_early,
        "input_problems": run.input_problems,
        "served_in_last_run": run.served_now,
        "replay_wall_s": round(run.wall_s, 3),
    }


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    array = np.asarray(values, dtype=float)
    return {
        "n": int(array.size),
        "mean": round(float(array.mean()), 3),
        "p50": round(float(np.percentile(array, 50)), 3),
        "p90": round(float(np.percentile(array, 90)), 3),
        "max": round(float(array.max()), 3),
    }


# --------------------------------------------------------------------------- markdown
def _markdown(report: dict[str, Any]) -> str:
    policies = report["policies"]
    names = list(policies)
    inputs = report["inputs"]
    lines = [
        "# Replay report",
        "",
        f"Bag `{inputs['bag']}`, images `{inputs['image_topic']}`, commands "
        f"`{inputs['commands']}`; settings: "
        + ", ".join(f"{k}={v}" for k, v in inputs["pairing"].items()),
        "",
        "| | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]

    def row(title: str, cell: Any) -> None:
        lines.append(f"| {title} | " + " | ".join(str(cell(policies[n])) for n in names) + " |")

    row("commands", lambda p: p["commands"])
    row("statuses", lambda p: ", ".join(f"{k} {v}" for k, v in p["statuses"].items()))
    row("#Tok mean (max)", lambda p: _mean_max(p["reasoning_tokens"]))
    for stage in (*STAGES, "pipeline_ms"):
        row(f"{stage} mean / p90", lambda p, s=stage: _mean_p90(p["latency_ms"].get(s, {})))
    row("image age ms p50", lambda p: p["image_age_ms"].get("p50", "-"))
    row(
        "tracked commands, frames (ends)",
        lambda p: _tracking(p["tracking"]),
    )
    for kind in ("mask", "box"):
        row(
            f"{kind} labels gIoU / cIoU (n)",
            lambda p, k=kind: _giou(p["scores"].get(k)),
        )
    row("bag read to its end", lambda p: "yes" if not p["ended_early"] else "no (see below)")
    lines += ["", "## Commands", "", "| # | at s | id | command | " + " | ".join(names) + " |"]
    lines.append("| --- | --- | --- | --- |" + " --- |" * len(names))
    for command in report["commands"]:
        cells = []
        for name in names:
            entry = command["policies"].get(name)
            if entry is None:
                cells.append("(not replayed)")
                continue
            frame = entry["frame"]["frame_id"] if entry["frame"] else "no frame"
            iou = f", IoU {entry['iou']:.3f}" if "iou" in entry else ""
            track = entry.get("track")
            followed = (
                f", tracked {track['tracked_frames']} frame(s): {track['state']}" if track else ""
            )
            cells.append(
                f"{entry['status']} on {frame}, #Tok {entry['reasoning_tokens']}{iou}{followed}"
            )
        text = command["command"].replace("|", "\\|")[:60]
        ident = "" if command["id"] is None else json.dumps(command["id"])
        lines.append(
            f"| {command['index']} | {command['at_s']} | {ident} | {text} | "
            + " | ".join(cells)
            + " |"
        )
    notes = [
        f"- {name}: {policies[name]['ended_early']}"
        for name in names
        if policies[name]["ended_early"]
    ]
    notes += [f"- {name}: {p}" for name in names for p in policies[name]["input_problems"]]
    notes += [f"- label matches no command: {s}" for s in report["labels_without_command"]]
    if notes:
        lines += ["", "## Notes", "", *notes]
    lines += ["", "![contact sheet](contact_sheet.png)", ""]
    return "\n".join(lines)


def _tracking(tracking: dict[str, Any]) -> str:
    if not tracking["commands"]:
        return "-"
    ends = ", ".join(f"{k} {v}" for k, v in tracking["ends"].items())
    return f"{tracking['commands']}, {tracking['tracked_frames']} ({ends or 'none'})"


def _mean_max(stats: dict[str, float]) -> str:
    return f"{stats['mean']:.1f} ({stats['max']:.0f})" if stats.get("n") else "-"


def _mean_p90(stats: dict[str, float]) -> str:
    return f"{stats['mean']:.1f} / {stats['p90']:.1f}" if stats.get("n") else "-"


def _giou(scores: dict[str, float] | None) -> str:
    if not scores:
        return "-"
    return f"{scores['gIoU']:.3f} / {scores['cIoU']:.3f} ({scores['n']})"


# --------------------------------------------------------------------------- contact sheet
def write_contact_sheet(
    path: Path, runs: list[RunSummary], rows: list[dict[str, Any]], max_rows: int
) -> None:
    """One PNG: a header with the policies, then per command a caption and one tile per
    policy (its overlay, or the status on grey). At most ``max_rows`` commands (the first)."""
    import cv2

    shown = rows[:max_rows]
    width = TILE_W * max(len(runs), 1)
    height = (
        HEADER_H + len(shown) * (CAPTION_H + TILE_H) + (CAPTION_H if len(rows) > len(shown) else 0)
    )
    sheet = np.full((height, width, 3), 24, np.uint8)
    for column, run in enumerate(runs):
        _text(sheet, run.label, (column * TILE_W + 6, 21), 0.6)
    by_policy = {run.label: {r["index"]: r for r in run.records} for run in runs}
    y = HEADER_H
    for row in shown:
        ident = "" if row["id"] is None else f" id={json.dumps(row['id'])}"
        _text(
            sheet,
            f"#{row['index']}{ident} at {row['at_s']} s: {row['command']}"[:120],
            (6, y + 22),
            0.5,
        )
        y += CAPTION_H
        for column, run in enumerate(runs):
            record = by_policy[run.label].get(row["index"])
            tile = _tile(run, record)
            x = column * TILE_W
            sheet[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
        y += TILE_H
    if len(rows) > len(shown):
        _text(sheet, f"... {len(rows) - len(shown)} more command(s) in report.md", (6, y + 22), 0.5)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


def _tile(run: RunSummary, record: dict[str, Any] | None) -> np.ndarray:
    import cv2

    tile = np.full((TILE_H, TILE_W, 3), 64, np.uint8)
    picture = run.folder.picture(record["overlay"], color=True) if record else None
    if picture is not None:
        scale = min(TILE_W / picture.shape[1], TILE_H / picture.shape[0])
        size = (max(1, round(picture.shape[1] * scale)), max(1, round(picture.shape[0] * scale)))
        small = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
        tile[: small.shape[0], : small.shape[1]] = small
        return tile
    if record is None:
        _text(tile, "(not replayed)", (8, 24), 0.5)
        return tile
    result = record["result"]
    _text(tile, result["status"], (8, 24), 0.6)
    for n, line in enumerate(textwrap.wrap(result["error"], 40)[:8]):
        _text(tile, line, (8, 50 + 20 * n), 0.4)
    return tile


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    import cv2

    ascii_text = text.encode("ascii", "replace").decode("ascii")  # Hershey fonts are ASCII
    cv2.putText(
        image, ascii_text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235), 1, cv2.LINE_AA
    )
