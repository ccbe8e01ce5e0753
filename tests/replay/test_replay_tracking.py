"""`wise-replay` tracks in bag time as the node does (the same CommandTracking object): a command
with ``"track": true`` (or ``track_default``) gets its result, then one ``track`` message and
tracked mask per later frame with that frame's header; a new command preempts the track, a stop
ends it, ``track_timeout_s`` counts bag seconds, a loss ends it; the output bag and the report
carry it; the same bag twice gives identical output, and a replay stopped mid-track continues
to the same output. Tiny taught policy and tiny SAM2 with video memory (random weights)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="needs the replay extra (rosbags)")

from support.bags import NS, QUESTIONS, T0, BagBuilder

from wise_dev.moving_shapes import make_stream
from wise_perception.replay import cli

pytestmark = pytest.mark.slow

FRAMES = make_stream(4, length=14, height=48, width=64).frames
PERIOD_S = 0.1  # frame f<i> is received (and stamped) at i * PERIOD_S


def frames(builder: BagBuilder, count: int) -> BagBuilder:
    for i in range(count):
        builder.image(i * PERIOD_S, f"f{i:02d}", FRAMES[i % len(FRAMES)])
    return builder


def command(builder: BagBuilder, at_s: float, **fields: object) -> None:
    builder.command(at_s, json.dumps(fields))


def scenario() -> BagBuilder:
    """Track t1 from f01, t2 preempts it on f05, a stop ends t2 after f08, a stop with nothing
    to stop, then a command that does not ask to be tracked."""
    b = frames(BagBuilder(), 14)
    command(b, 0.15, id="t1", command=QUESTIONS[0], track=True)
    command(b, 0.55, id="t2", command=QUESTIONS[1], track=True)
    command(b, 0.85, id="s1", stop=True)
    command(b, 1.05, id="s2", stop=True)
    command(b, 1.12, id="plain", command=QUESTIONS[2])
    return b


def params(path: Path, **values: object) -> Path:
    """A node parameters file: random SAM2 scores are low, so threshold 0 unless given."""
    values = {"track_score_threshold": 0.0, **values}
    body = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in values.items())
    path.write_text("wise_perception:\n  ros__parameters:\n" + body)
    return path


def replay(bag: Path, out: Path, policy: Path, sam2: Path, params_file: Path) -> int:
    args = [str(bag), "--out", str(out), "--segmenter", str(sam2), "--device", "cpu"]
    args += ["--dtype", "float32", "--max-new-tokens", "96", "--quiet"]
    args += ["--policy", f"taught={policy}", "--params-file", str(params_file)]
    return cli.main(args)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def stable(record: dict) -> dict:
    """A journal line without what is measured on this machine (wall-clock timings)."""
    record = json.loads(json.dumps(record))
    if "result" in record:
        record["result"].pop("timings")
        for key in ("pipeline_ms", "latency_ms"):
            record["result"]["node"].pop(key, None)
    else:
        record["track"].pop("track_ms")
    return record


def stamp_of(frame_index: int) -> dict:
    at = T0 + round(frame_index * PERIOD_S * NS)
    return {"sec": at // NS, "nanosec": at % NS}


@pytest.fixture(scope="module")
def tracked(taught_policy_dir, tiny_sam2_video_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("replay_tracking")
    bag = scenario().write(root / "bag", "mcap")
    settings = params(root / "params.yaml")
    out = root / "out"
    assert replay(bag, out, taught_policy_dir, tiny_sam2_video_dir, settings) == 0
    return {"bag": bag, "params": settings, "out": out, "folder": out / "taught"}


def test_a_tracked_command_gets_one_result_then_a_track_message_per_later_frame(tracked):
    results = {r["result"]["id"]: r["result"] for r in lines(tracked["folder"] / "results.jsonl")}
    assert list(results) == ["t1", "t2", "s1", "s2", "plain"]  # one result per command
    assert [r["status"] for r in results.values()] == ["ok", "ok", "stopped", "stopped", "ok"]
    assert results["t1"]["frame_id"] == "f01" and results["t2"]["frame_id"] == "f05"
    for ident in ("t1", "t2"):
        assert results[ident]["track"] == {"state": "tracking", "error": ""}
    assert "track" not in results["plain"]  # track_default is off, and it did not ask

    tracks = lines(tracked["folder"] / "tracks.jsonl")
    seen = [
        (t["track"]["id"], t["kind"], t["track"]["frame_id"], t["track"]["state"]) for t in tracks
    ]
    assert seen == [
        *[("t1", "tracked", f"f{i:02d}", "tracking") for i in (2, 3, 4, 5)],
        ("t1", "ended", "f05", "preempted"),  # by t2, taken at 0.55 s
        *[("t2", "tracked", f"f{i:02d}", "tracking") for i in (6, 7, 8)],
        ("t2", "ended", "f08", "stopped"),  # by s1; f09 onwards: nothing tracked
    ]
    for t in tracks:  # the header of the frame it was computed on; at that frame's bag time
        frame = int(t["track"]["frame_id"][1:])
        assert t["track"]["stamp"] == stamp_of(frame)
        if t["kind"] == "tracked":
            assert t["at_ns"] == T0 + round(frame * PERIOD_S * NS)
            assert t["mask"] and (tracked["folder"] / t["mask"]).is_file()
        else:
            assert t["mask"] is None
    assert tracks[4]["at_ns"] == T0 + round(0.55 * NS) and tracks[4]["track"]["error"]
    assert [t["track"]["tracked_frames"] for t in tracks[:4]] == [1, 2, 3, 4]
    assert {t["track"]["request_id"] for t in tracks} == {1, 2}  # the node's request ids


def test_a_stop_says_whether_it_ended_a_track(tracked):
    results = {r["result"]["id"]: r["result"] for r in lines(tracked["folder"] / "results.jsonl")}
    assert results["s1"]["error"] == ""  # it stopped t2
    assert results["s2"]["error"] == "no track was running"


def test_the_output_bag_carries_the_track_topic_and_tracked_masks_with_frame_headers(tracked):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    folder = tracked["folder"]
    tracks = lines(folder / "tracks.jsonl")
    by_topic: dict[str, list] = {}
    with Reader(folder / "bag") as reader:
        for connection, time_ns, raw in reader.messages():
            msg = store.deserialize_cdr(raw, connection.msgtype)
            by_topic.setdefault(connection.topic.rsplit("/", 1)[1], []).append((time_ns, msg))
    on_track = [(time_ns, json.loads(m.data)) for time_ns, m in by_topic["track"]]
    assert on_track == [(t["at_ns"], t["track"]) for t in tracks]  # the node's JSON, in order
    masks = [
        (m.header.frame_id, (m.header.stamp.sec, m.header.stamp.nanosec))
        for _, m in by_topic["mask"]
    ]
    tracked_frames = [t["track"] for t in tracks if t["kind"] == "tracked"]
    # the three answers' masks and the seven tracked ones, in bag time
    assert [f for f, _ in masks] == ["f01", *[f"f{i:02d}" for i in (2, 3, 4, 5)], "f05"] + [
        f"f{i:02d}" for i in (6, 7, 8)
    ] + ["f11"]
    for track in tracked_frames:
        frame_id, stamp = track["frame_id"], (track["stamp"]["sec"], track["stamp"]["nanosec"])
        assert (frame_id, stamp) in masks
    for _, mask in by_topic["mask"]:
        assert mask.encoding == "mono8" and set(np.unique(mask.data)) <= {0, 255}
    pixels = {
        json.loads(m.data)["frame_id"]: json.loads(m.data)["mask_pixels"]
        for _, m in by_topic["track"]
    }
    for _, mask in by_topic["mask"][1:5]:
        assert int((mask.data == 255).sum()) == pixels[mask.header.frame_id]


def test_the_report_says_what_was_tracked(tracked):
    report = json.loads((tracked["out"] / "report.json").read_text())
    tracking = report["policies"]["taught"]["tracking"]
    assert tracking["commands"] == tracking["started"] == 2
    assert tracking["tracked_frames"] == 7
    assert tracking["ends"] == {"preempted": 1, "stopped": 1}
    entries = {c["id"]: c["policies"]["taught"] for c in report["commands"]}
    assert (
        entries["t1"]["track"]["tracked_frames"] == 4
        and entries["t1"]["track"]["state"] == "preempted"
    )
    assert "track" not in entries["plain"]
    assert "tracked commands" in (tracked["out"] / "report.md").read_text()


def test_the_same_bag_twice_gives_identical_tracking(
    tracked, taught_policy_dir, tiny_sam2_video_dir, tmp_path
):
    assert (
        replay(tracked["bag"], tmp_path, taught_policy_dir, tiny_sam2_video_dir, tracked["params"])
        == 0
    )
    first, second = tracked["folder"], tmp_path / "taught"
    for journal in ("results.jsonl", "tracks.jsonl"):
        assert [stable(r) for r in lines(first / journal)] == [
            stable(r) for r in lines(second / journal)
        ]
    for t in lines(first / "tracks.jsonl"):
        if t["mask"]:
            assert (second / t["mask"]).read_bytes() == (first / t["mask"]).read_bytes()


def test_a_replay_stopped_mid_track_continues_from_that_command(
    tracked, taught_policy_dir, tiny_sam2_video_dir, tmp_path
):
    """Both journals are written in order and flushed line by line, so a stop leaves a prefix
    of each: here, t2's result and its first tracked frame, not t2's end."""
    out = tmp_path / "out"
    shutil.copytree(tracked["out"], out)
    folder = out / "taught"
    results, tracks = lines(folder / "results.jsonl"), lines(folder / "tracks.jsonl")
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results[:2]))
    (folder / "tracks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tracks[:6]))
    manifest = json.loads((folder / "replay.json").read_text())
    (folder / "replay.json").write_text(json.dumps({**manifest, "finished": False}))
    for t in tracks[6:]:
        if t["mask"]:
            (folder / t["mask"]).unlink()

    assert (
        replay(tracked["bag"], out, taught_policy_dir, tiny_sam2_video_dir, tracked["params"]) == 0
    )
    assert lines(folder / "results.jsonl")[0] == results[0]  # t1 kept, not replayed
    assert lines(folder / "tracks.jsonl")[:5] == tracks[:5]  # t1's track kept
    assert [stable(r) for r in lines(folder / "results.jsonl")] == [stable(r) for r in results]
    assert [stable(t) for t in lines(folder / "tracks.jsonl")] == [stable(t) for t in tracks]
    for t in tracks:
        if t["mask"]:
            assert (folder / t["mask"]).read_bytes() == (tracked["folder"] / t["mask"]).read_bytes()


def test_track_default_and_the_timeout_count_bag_seconds(
    taught_policy_dir, tiny_sam2_video_dir, tmp_path
):
    b = frames(BagBuilder(), 8)
    b.command(0.15, QUESTIONS[0])  # plain text: tracked by track_default
    command(b, 0.65, id="no", command=QUESTIONS[1], track=False)
    bag = b.write(tmp_path / "bag", "mcap")
    settings = params(tmp_path / "p.yaml", track_default=True, track_timeout_s=0.2)
    assert replay(bag, tmp_path / "out", taught_policy_dir, tiny_sam2_video_dir, settings) == 0
    folder = tmp_path / "out" / "taught"
    results = [r["result"] for r in lines(folder / "results.jsonl")]
    assert results[0]["track"]["state"] == "tracking" and "track" not in results[1]
    tracks = [(t["track"]["frame_id"], t["track"]["state"]) for t in lines(folder / "tracks.jsonl")]
    # seeded at 0.15 s: f02 (0.05 s later) and f03 (0.15 s) go on, f04 (0.25 s) times out, and
    # its message says so (no end message after it)
    assert tracks == [("f02", "tracking"), ("f03", "tracking"), ("f04", "timeout")]


def test_a_lost_object_ends_the_track(taught_policy_dir, tiny_sam2_video_dir, tmp_path):
    b = frames(BagBuilder(), 6)
    command(b, 0.15, id="l", command=QUESTIONS[0], track=True)
    bag = b.write(tmp_path / "bag", "mcap")
    # no score reaches 1.0: lost after two frames
    settings = params(tmp_path / "p.yaml", track_score_threshold=1.0, track_lost_after=2)
    assert replay(bag, tmp_path / "out", taught_policy_dir, tiny_sam2_video_dir, settings) == 0
    tracks = lines(tmp_path / "out" / "taught" / "tracks.jsonl")
    assert [(t["track"]["frame_id"], t["track"]["state"]) for t in tracks] == [
        ("f02", "tracking"),
        ("f03", "lost"),
    ]
    assert all(t["track"]["score"] < 1.0 for t in tracks)


def test_with_reground_on_loss_the_policy_is_asked_again_on_that_frame(
    taught_policy_dir, tiny_sam2_video_dir, tmp_path
):
    b = frames(BagBuilder(), 6)
    command(b, 0.15, id="r", command=QUESTIONS[0], track=True)
    bag = b.write(tmp_path / "bag", "mcap")
    settings = params(
        tmp_path / "p.yaml", track_score_threshold=1.0, track_lost_after=2, reground_on_loss=True
    )
    assert replay(bag, tmp_path / "out", taught_policy_dir, tiny_sam2_video_dir, settings) == 0
    folder = tmp_path / "out" / "taught"
    assert len(lines(folder / "results.jsonl")) == 1  # a new answer is tracking output only
    tracks = lines(folder / "tracks.jsonl")
    assert [(t["kind"], t["track"]["frame_id"], t["track"]["state"]) for t in tracks] == [
        ("tracked", "f02", "tracking"),
        ("tracked", "f03", "lost"),
        ("regrounded", "f03", "tracking"),  # the new answer on f03, its mask on mask
        ("tracked", "f04", "tracking"),
        ("tracked", "f05", "lost"),
        ("regrounded", "f05", "tracking"),  # and the bag ends: no end message
    ]
    assert [t["track"]["regrounded"] for t in tracks] == [0, 0, 1, 1, 1, 2]
    assert all(t["mask"] for t in tracks)
