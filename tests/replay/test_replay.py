"""`wise-replay` end to end with the tiny models: bags of both storages written with rosbags,
one result per command with the node's statuses, output bags read back by rosbags and by the
mcap package (headers preserved), identical results on a second replay, two policies side by
side with labels scored by the evaluator's numbers, a cut bag, a commands file, interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rosbags", reason="needs the replay extra (rosbags)")

from support.bags import NS, QUESTIONS, T0, BagBuilder, rgb, storage_file

from wise_perception.replay import cli

pytestmark = pytest.mark.slow

STORAGES = ["mcap", "sqlite3"]
# (command index, id, expected status, frame it is paired with)
SCENARIO = [
    (1, "c0", "ok", "f1"),  # sent before any image: waits, then takes f1
    (2, "c1", "ok", "f1"),
    (3, "c2", "invalid_image", "f2"),  # the newest frame has an unknown encoding
    (4, None, "invalid_command", None),  # empty
    (5, None, "ok", "f3"),  # plain text; bgr8 frame with row padding
    (6, 7, "ok", "f4"),  # numeric id; unstamped frame
    (7, "late", "no_image", None),  # f4 is stale by then and nothing comes in time
]


def scenario() -> BagBuilder:
    b = BagBuilder()
    b.command(0.0, "the cup on the left", "c0")
    b.image(0.5, "f1", rgb(1))
    b.command(0.6, "the red square", "c1")
    b.image(1.0, "f2", rgb(2), encoding="yuv422")
    b.command(1.1, "on a bad frame", "c2")
    b.command(1.2, "")
    b.image(2.0, "f3", np.ascontiguousarray(rgb(3)[:, :, ::-1]), encoding="bgr8", pad=3)
    b.command(2.1, "segment the bottle next to the gripper")
    b.image(3.0, "f4", rgb(4), stamp_ns=None)
    b.command(3.05, "the smallest object on the desk", 7)
    b.command(9.0, "stale, no frame comes in time", "late")
    b.image(12.0, "f5", rgb(5))
    return b


def replay(bag: Path, out: Path, policies: dict[str, Path], sam2: Path, *extra) -> int:
    args = [str(bag), "--out", str(out), "--segmenter", str(sam2), "--device", "cpu"]
    args += ["--dtype", "float32", "--max-new-tokens", "96", "--quiet"]
    for label, model in policies.items():
        args += ["--policy", f"{label}={model}"]
    return cli.main(args + [str(e) for e in extra])


def journal(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def stable(record: dict) -> dict:
    """A journal line without what is measured on this machine (the pipeline's timings)."""
    record = json.loads(json.dumps(record))
    record["result"].pop("timings")
    for key in ("pipeline_ms", "latency_ms"):
        record["result"]["node"].pop(key, None)
    return record


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    builder = scenario()
    return {storage: builder.write(root / storage, storage) for storage in STORAGES}


@pytest.fixture(scope="module")
def replayed(bags, taught_policy_dir, tiny_sam2_dir, tmp_path_factory):
    """Each storage's bag replayed once with the taught policy."""
    outs = {}
    for storage, bag in bags.items():
        outs[storage] = tmp_path_factory.mktemp(f"out_{storage}")
        assert replay(bag, outs[storage], {"taught": taught_policy_dir}, tiny_sam2_dir) == 0
    return outs


def source_headers(bag: Path) -> dict[str, tuple[int, int]]:
    """frame_id -> (sec, nanosec) of the input bag's frames."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store, out = get_typestore(Stores.ROS2_HUMBLE), {}
    with Reader(bag) as reader:
        for connection, _, raw in reader.messages():
            if connection.topic == "/wise/image":
                msg = store.deserialize_cdr(raw, connection.msgtype)
                out[msg.header.frame_id] = (msg.header.stamp.sec, msg.header.stamp.nanosec)
    return out


@pytest.mark.parametrize("storage", STORAGES)
def test_one_result_per_command_paired_as_the_node_pairs(replayed, storage):
    records = journal(replayed[storage] / "taught")
    assert sorted(r["index"] for r in records) == [s[0] for s in SCENARIO]
    by_index = {r["index"]: r for r in records}
    for index, command_id, status, frame_id in SCENARIO:
        result = by_index[index]["result"]
        assert result["status"] == status, result["error"]
        assert result["id"] == command_id and result["node"]["request_id"] == index
        assert (result["frame_id"] or None) == frame_id
    assert by_index[1]["result"]["node"]["image_wait_ms"] == 500.0  # waited 0.5 s of bag time
    assert by_index[2]["result"]["node"]["image_age_ms"] == 100.0
    assert by_index[1]["result"]["rationale"] == "the red square is on the left"
    assert "unsupported image encoding 'yuv422'" in by_index[3]["result"]["error"]
    late = by_index[7]
    assert late["decided_ns"] == T0 + 11 * NS  # 9.0 s + command_wait_s
    assert late["result"]["stamp"] == {"sec": T0 // NS + 11, "nanosec": 0}  # the bag's clock
    manifest = json.loads((replayed[storage] / "taught" / "replay.json").read_text())
    assert manifest["complete"] and manifest["commands"] == 7


def test_both_storages_give_the_same_results(replayed):
    mcap, sqlite = (
        [stable(r) for r in journal(replayed[s] / "taught")] for s in ("mcap", "sqlite3")
    )
    assert mcap == sqlite


@pytest.mark.parametrize("storage", STORAGES)
def test_the_output_bag_is_the_nodes_topics_with_the_source_headers_read_by_rosbags(
    bags, replayed, storage
):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    headers = source_headers(bags[storage])
    by_index = {r["index"]: r for r in journal(replayed[storage] / "taught")}
    seen: dict[str, list] = {}
    with Reader(replayed[storage] / "taught" / "bag") as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types == {
            "/replay/taught/result": "std_msgs/msg/String",
            "/replay/taught/mask": "sensor_msgs/msg/Image",
            "/replay/taught/rationale": "std_msgs/msg/String",
            "/replay/taught/overlay": "sensor_msgs/msg/Image",
            "/replay/taught/track": "std_msgs/msg/String",  # nothing tracked here
        }
        for connection, time_ns, raw in reader.messages():
            msg = store.deserialize_cdr(raw, connection.msgtype)
            seen.setdefault(connection.topic.rsplit("/", 1)[1], []).append((time_ns, msg))
    results = [json.loads(m.data) for _, m in seen["result"]]
    assert [r["node"]["request_id"] for r in results] == [1, 2, 3, 4, 5, 6, 7]  # one each
    for (time_ns, _), result in zip(seen["result"], results, strict=True):
        assert time_ns == by_index[result["node"]["request_id"]]["decided_ns"]
        assert result == by_index[result["node"]["request_id"]]["result"]  # the node's JSON
    ok = [r for r in results if r["status"] == "ok"]
    assert len(seen["mask"]) == len(seen["overlay"]) == len(seen["rationale"]) == len(ok) == 4
    for (_, mask), (_, picture), result in zip(seen["mask"], seen["overlay"], ok, strict=True):
        for msg in (mask, picture):  # the header of the frame it was computed on
            stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            assert msg.header.frame_id == result["frame_id"]
            assert (
                stamp
                == headers[result["frame_id"]]
                == (
                    result["stamp"]["sec"],
                    result["stamp"]["nanosec"],
                )
            )
            assert (msg.width, msg.height) == (64, 48)
        assert mask.encoding == "mono8" and picture.encoding == "rgb8"
        assert set(np.unique(mask.data)) <= {0, 255}
        assert int((mask.data == 255).sum()) == result["mask_pixels"] > 0


def test_the_output_bag_reads_with_the_mcap_package(replayed):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    folder = replayed["mcap"] / "taught"
    by_topic: dict[str, list] = {}
    with (folder / "bag" / "bag.mcap").open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        assert summary is not None and summary.statistics.message_count == 7 + 3 * 4
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            by_topic.setdefault(channel.topic, []).append((schema.name, message, decoded))
    results = by_topic["/replay/taught/result"]
    assert {s for s, _, _ in results} == {"std_msgs/msg/String"}
    assert [json.loads(d.data)["status"] for _, _, d in results] == [s[2] for s in SCENARIO]
    for _, message, decoded in by_topic["/replay/taught/mask"]:
        assert decoded.header.frame_id in {"f1", "f3", "f4"} and decoded.encoding == "mono8"
        assert message.log_time >= T0
    unstamped = [d for _, _, d in by_topic["/replay/taught/overlay"] if d.header.frame_id == "f4"]
    assert [(d.header.stamp.sec, d.header.stamp.nanosec) for d in unstamped] == [(0, 0)]


def test_the_same_bag_twice_gives_identical_results(
    bags, replayed, taught_policy_dir, tiny_sam2_dir, tmp_path
):
    assert replay(bags["mcap"], tmp_path, {"taught": taught_policy_dir}, tiny_sam2_dir) == 0
    first, second = journal(replayed["mcap"] / "taught"), journal(tmp_path / "taught")
    assert [stable(r) for r in first] == [stable(r) for r in second]
    for record in first:
        for kind in ("mask", "overlay"):
            if record[kind]:
                before = (replayed["mcap"] / "taught" / record[kind]).read_bytes()
                assert (tmp_path / "taught" / record[kind]).read_bytes() == before


def test_two_policies_side_by_side_with_labels_scored_by_the_evaluator(
    bags, replayed, taught_policy_dir, tiny_policy_dir, tiny_sam2_dir, tmp_path
):
    from wise_training.metrics import SegmentationScores, score_masks

    label_mask = np.zeros((48, 64), np.uint8)
    label_mask[10:30, 5:35] = 255
    cv2.imwrite(str(tmp_path / "cup.png"), label_mask)
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        '{"id": "c0", "mask": "cup.png"}\n'
        '{"id": "c1", "box": [8, 11, 30, 29]}\n'
        '{"index": 5, "box": [0, 0, 20, 20]}\n'
        '{"id": "nobody", "box": [0, 0, 1, 1]}\n'
    )
    out = tmp_path / "out"
    policies = {"taught": taught_policy_dir, "random": tiny_policy_dir}
    assert replay(bags["mcap"], out, policies, tiny_sam2_dir, "--labels", labels) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["policies"]) == ["taught", "random"]
    taught, random_ = report["policies"]["taught"], report["policies"]["random"]
    assert taught["statuses"]["ok"] == 4 and random_["statuses"]["unparsable_answer"] == 4
    assert taught["reasoning_tokens"]["mean"] > 0 and "policy_decode_ms" in taught["latency_ms"]
    for row in report["commands"]:  # the same bag, the same pairing, whatever the policy
        assert row["same_frame"]

    # The evaluator's numbers, from the replay's own masks and the labels.
    by_index = {r["index"]: r for r in journal(out / "taught")}
    predicted = cv2.imread(str(out / "taught" / by_index[1]["mask"]), cv2.IMREAD_GRAYSCALE) > 0
    mask_score = score_masks(predicted, label_mask > 0)
    rows = {row["index"]: row for row in report["commands"]}
    assert rows[1]["policies"]["taught"]["iou"] == pytest.approx(mask_score.iou)
    assert taught["scores"]["mask"] == {"gIoU": mask_score.iou, "cIoU": mask_score.iou, "n": 1}
    boxes = SegmentationScores()
    for index, label_box in ((2, (8, 11, 30, 29)), (5, (0, 0, 20, 20))):
        pred = np.zeros((48, 64), bool)
        for obj in by_index[index]["result"]["objects"]:
            x1, y1, x2, y2 = (round(v) for v in obj["box"])
            pred[y1 : y2 + 1, x1 : x2 + 1] = True
        target = np.zeros((48, 64), bool)
        target[label_box[1] : label_box[3] + 1, label_box[0] : label_box[2] + 1] = True
        boxes.add(score_masks(pred, target))
    assert taught["scores"]["box"] == pytest.approx(boxes.as_dict())
    assert rows[2]["policies"]["taught"]["iou"] == pytest.approx(1.0)  # the box it answers
    # a policy that fails scores an empty prediction, as the evaluator scores unparsable answers
    assert random_["scores"]["mask"]["gIoU"] == 0.0 and random_["scores"]["box"]["n"] == 2
    assert report["labels_without_command"] == ["labels.jsonl:4"]

    markdown = (out / "report.md").read_text()
    assert "| | taught | random |" in markdown and "mask labels gIoU / cIoU (n)" in markdown
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet.shape == (30 + 7 * (34 + 240), 2 * 320, 3)


def test_a_cut_bag_replays_what_it_holds_and_says_where_it_ended(
    taught_policy_dir, tiny_sam2_dir, tmp_path, capsys
):
    bag = BagBuilder().steady(10, 240, 320).write(tmp_path / "bag", "mcap")  # MCAP chunks
    data_file = storage_file(bag)
    data = data_file.read_bytes()
    data_file.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert replay(bag, out, {"taught": taught_policy_dir}, tiny_sam2_dir) == cli.EXIT_ENDED_EARLY
    err = capsys.readouterr().err
    assert "the bag ends early" in err and "bag.mcap is cut or damaged" in err
    records = journal(out / "taught")
    assert 1 <= len(records) < 10
    assert [r["result"]["id"] for r in records] == list(range(len(records)))  # each in order
    assert all(r["result"]["status"] == "ok" for r in records)
    report = json.loads((out / "report.json").read_text())
    assert report["policies"]["taught"]["ended_early"].startswith("the bag ends early")
    assert "the bag ends early" in (out / "report.md").read_text()
    # a second run has nothing more to replay, and says the same
    assert replay(bag, out, {"taught": taught_policy_dir}, tiny_sam2_dir) == cli.EXIT_ENDED_EARLY
    assert journal(out / "taught") == records


def test_a_commands_file_for_a_bag_of_compressed_frames_without_commands(
    taught_policy_dir, tiny_sam2_dir, tmp_path
):
    builder = BagBuilder(image_topic="/camera/image_raw/compressed")
    builder.compressed(0.0, "png_frame", rgb(1), "png")
    builder.compressed(1.0, "jpeg_frame", rgb(2), "rgb8; jpeg compressed bgr8")
    bag = builder.write(tmp_path / "bag", "sqlite3")
    commands = tmp_path / "commands.jsonl"
    commands.write_text(
        "# recorded before the node existed\n"
        '{"at_s": 0.5, "command": "the cup on the left", "id": "a"}\n'
        f'{{"time_ns": {T0 + 1_200_000_000}, "command": "the red square"}}\n'
    )
    out = tmp_path / "out"
    code = replay(bag, out, {"taught": taught_policy_dir}, tiny_sam2_dir, "--commands", commands)
    assert code == 0
    records = journal(out / "taught")
    assert [
        (r["result"]["id"], r["result"]["status"], r["result"]["frame_id"]) for r in records
    ] == [
        ("a", "ok", "png_frame"),
        (None, "ok", "jpeg_frame"),
    ]


def test_a_damaged_message_is_skipped_and_named(taught_policy_dir, tiny_sam2_dir, tmp_path):
    builder = BagBuilder()
    builder.image(0.0, "f1", rgb(1))
    builder.damaged(0.5, "/wise/image", "sensor_msgs/msg/Image", b"\x00\x01\x00\x00junk")
    builder.command(0.6, QUESTIONS[0], "after")
    bag = builder.write(tmp_path / "bag", "mcap")
    out = tmp_path / "out"
    assert replay(bag, out, {"taught": taught_policy_dir}, tiny_sam2_dir) == 0
    (record,) = journal(out / "taught")
    assert (record["result"]["status"], record["result"]["frame_id"]) == ("ok", "f1")
    (problem,) = json.loads((out / "report.json").read_text())["policies"]["taught"][
        "input_problems"
    ]
    assert problem.startswith(f"/wise/image at bag time {T0 + NS // 2}: not a readable")
    assert "skipped" in problem and "skipped" in (out / "report.md").read_text()


def test_models_that_do_not_load_exit_3(bags, tiny_sam2_dir, tmp_path, capsys):
    missing = tmp_path / "no_such_checkpoint"
    assert replay(bags["mcap"], tmp_path / "out", {"gone": missing}, tiny_sam2_dir) == 3
    err = capsys.readouterr().err
    assert "[gone] could not load the models" in err and "no_such_checkpoint" in err
    manifest = json.loads((tmp_path / "out" / "gone" / "replay.json").read_text())
    assert not manifest["finished"] and manifest["commands"] == 0


def test_another_replay_in_the_same_folder_is_refused_unless_restarted(
    bags, taught_policy_dir, tiny_sam2_dir, tmp_path, capsys
):
    policies = {"taught": taught_policy_dir}
    assert replay(bags["sqlite3"], tmp_path, policies, tiny_sam2_dir, "--command-wait-s", 1) == 0
    code = replay(bags["sqlite3"], tmp_path, policies, tiny_sam2_dir)
    assert code == cli.EXIT_BAD_INPUT
    assert (
        "holds a replay of another bag or settings (differs in: settings)"
        in capsys.readouterr().err
    )
    assert replay(bags["sqlite3"], tmp_path, policies, tiny_sam2_dir, "--restart") == 0
    assert [r["decided_ns"] for r in journal(tmp_path / "taught")][-1] == T0 + 11 * NS


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _start(bag: Path, out: Path, policy: Path, sam2: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "wise_perception.replay", str(bag), "--out", str(out)]
    command += ["--policy", f"taught={policy}", "--segmenter", str(sam2), "--device", "cpu"]
    command += ["--dtype", "float32", "--max-new-tokens", "96"]
    # Started as from a terminal, whatever started the tests: a shell's background job (`make
    # test &`, nohup) begins with SIGINT ignored, the child inherits that across exec, and Python
    # then installs no KeyboardInterrupt handler, so the replay would never see the Ctrl+C. A
    # handler here becomes the default disposition in the child.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_for_lines(proc: subprocess.Popen, path: Path, count: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while _lines(path) < count:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the replay wrote nothing in time"
        time.sleep(0.02)


def test_an_interrupted_or_killed_replay_continues_and_loses_nothing(
    taught_policy_dir, tiny_sam2_dir, tmp_path
):
    bag = BagBuilder().steady(24).write(tmp_path / "bag", "mcap")
    out, lines = tmp_path / "out", tmp_path / "out" / "taught" / "results.jsonl"

    # Ctrl+C: the command in flight is abandoned, what was done is kept and its bag written
    proc = _start(bag, out, taught_policy_dir, tiny_sam2_dir)
    _wait_for_lines(proc, lines, 1)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == cli.EXIT_INTERRUPTED, output
    assert "rerun the same command to continue" in output
    kept = lines.read_text()
    assert 1 <= len(kept.splitlines()) < 24
    manifest = json.loads((out / "taught" / "replay.json").read_text())
    assert not manifest["finished"] and manifest["commands"] == len(kept.splitlines())
    from rosbags.rosbag2 import Reader

    with Reader(out / "taught" / "bag") as reader:
        assert reader.topics["/replay/taught/result"].msgcount == len(kept.splitlines())

    # killed outright: every line written before the kill is kept
    proc = _start(bag, out, taught_policy_dir, tiny_sam2_dir)
    _wait_for_lines(proc, lines, len(kept.splitlines()) + 1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    after_kill = lines.read_text()
    assert after_kill.startswith(kept)

    # a torn last line (a kill in the middle of writing it) is dropped and replayed
    with lines.open("a") as stream:
        stream.write('{"index": 99, "torn')
    assert replay(bag, out, {"taught": taught_policy_dir}, tiny_sam2_dir) == 0
    final = journal(out / "taught")
    assert lines.read_text().startswith(after_kill)
    assert [r["index"] for r in final] == list(range(1, 25))

    reference = tmp_path / "reference"
    assert replay(bag, reference, {"taught": taught_policy_dir}, tiny_sam2_dir) == 0
    assert [stable(r) for r in final] == [stable(r) for r in journal(reference / "taught")]
