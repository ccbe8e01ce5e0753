"""Reading recorded bags (replay/bag.py): both storages written by rosbags as `ros2 bag record`
writes them, bags whose recording did not end cleanly, and the clear errors (exit 2, before
any model loads) for what cannot be replayed."""

from __future__ import annotations

import shutil
import sys

import pytest

pytest.importorskip("rosbags", reason="needs the replay extra (rosbags)")

from support.bags import NS, T0, BagBuilder, rgb, storage_file

from wise_perception.replay import cli
from wise_perception.replay.bag import BagError, InputBag, MissingExtra

STORAGES = ["mcap", "sqlite3"]


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    builder = BagBuilder().steady(20, 240, 320)  # several MCAP chunks
    return {storage: builder.write(root / storage, storage) for storage in STORAGES}


def read_all(bag: InputBag) -> list:
    return list(bag.messages({"/wise/image", "/wise/command"}))


@pytest.mark.parametrize("storage", STORAGES)
def test_both_storages_read_in_bag_time(bags, storage):
    bag = InputBag.open(bags[storage])
    assert bag.storage == storage and bag.start_ns == T0 and not bag.notes
    assert bag.image_topic(None).name == "/wise/image"
    assert bag.command_topic(None).count == 20
    messages = read_all(bag)
    assert len(messages) == 40 and bag.end is None
    assert [m.time_ns for m in messages] == sorted(m.time_ns for m in messages)
    assert messages[1].topic == "/wise/command" and messages[1].time_ns == T0 + NS // 10


@pytest.mark.parametrize("storage", STORAGES)
def test_a_bag_cut_in_the_middle_reads_up_to_the_cut_and_says_where(bags, storage, tmp_path):
    cut = tmp_path / storage
    shutil.copytree(bags[storage], cut)
    data_file = storage_file(cut)
    data = data_file.read_bytes()
    data_file.write_bytes(data[: len(data) // 2])
    (cut / "metadata.yaml").unlink()  # a killed recorder writes none
    bag = InputBag.open(cut)
    assert any("no metadata.yaml" in note for note in bag.notes)
    messages = read_all(bag)
    assert 4 <= len(messages) < 40  # what the first half holds, in order
    assert [m.time_ns for m in messages] == sorted(m.time_ns for m in messages)
    assert bag.end is not None and bag.end.messages_read == len(messages)
    assert bag.end.last_time_ns == messages[-1].time_ns
    text = bag.end.describe(bag.start_ns)
    assert text.startswith(f"the bag ends early, after {len(messages)} message(s)")
    assert data_file.name in text and "cut or damaged" in text


def test_a_storage_file_alone_is_a_bag(bags):
    bag = InputBag.open(storage_file(bags["mcap"]))
    assert bag.storage == "mcap" and len(read_all(bag)) == 40


def test_topics_are_chosen_or_named_and_errors_list_what_is_there(tmp_path):
    builder = BagBuilder()
    builder.image(0, "a", rgb(0))
    builder.command(0.1, "x")
    other = BagBuilder(image_topic="/depth/image", command_topic="/chatter")
    other.image(0.2, "d", rgb(1))
    other.command(0.3, "y")
    builder.messages += other.messages
    bag = InputBag.open(builder.write(tmp_path / "two"))
    with pytest.raises(BagError, match="name the image topic with --image-topic: the bag has 2"):
        bag.image_topic(None)
    assert bag.image_topic("wise/image").name == "/wise/image"  # leading / optional
    assert bag.command_topic(None).name == "/wise/command"  # the one named .../command
    with pytest.raises(BagError, match=r"image topic /cam is not in the bag; its topics: "):
        bag.image_topic("/cam")
    with pytest.raises(BagError, match="has type std_msgs/msg/String; a replay reads"):
        bag.image_topic("/chatter")


def test_the_nodes_own_outputs_recorded_beside_the_camera_are_not_taken_for_it(tmp_path):
    builder = BagBuilder(image_topic="/camera/color/image_raw")
    builder.image(0, "cam", rgb(0))
    outputs = BagBuilder(image_topic="/wise/mask")
    outputs.image(0.1, "cam", rgb(0)[:, :, 0:1].repeat(3, 2))
    builder.messages += outputs.messages
    bag = InputBag.open(builder.write(tmp_path / "robot"))
    assert bag.image_topic(None).name == "/camera/color/image_raw"


def run_cli(capsys, *args) -> tuple[int, str]:
    code = cli.main([*map(str, args), "--quiet"])
    return code, capsys.readouterr().err


def test_what_cannot_be_replayed_is_a_clear_error_before_any_model_loads(bags, tmp_path, capsys):
    code, err = run_cli(capsys, tmp_path / "nowhere")
    assert code == cli.EXIT_BAD_INPUT and "does not exist" in err
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"this is not an mcap file at all" * 10)
    code, err = run_cli(capsys, junk)
    assert code == cli.EXIT_BAD_INPUT and "holds no readable message" in err
    code, err = run_cli(capsys, bags["mcap"], "--image-topic", "/camera/color/image_raw")
    assert code == cli.EXIT_BAD_INPUT
    assert "image topic /camera/color/image_raw is not in the bag" in err and "/wise/image" in err
    commands = tmp_path / "commands.jsonl"
    commands.write_text('{"at_s": 1, "comand": "typo"}\n')
    code, err = run_cli(capsys, bags["mcap"], "--commands", commands)
    assert code == cli.EXIT_BAD_INPUT and "commands.jsonl:1: unknown key(s) ['comand']" in err
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"id": 1, "mask": "missing.png"}\n')
    code, err = run_cli(capsys, bags["mcap"], "--labels", labels)
    assert code == cli.EXIT_BAD_INPUT and "mask" in err and "missing.png" in err
    code, err = run_cli(capsys, bags["mcap"], "--policy", "1st=/models/x")
    assert code == cli.EXIT_BAD_INPUT and "policy label '1st'" in err
    assert not (tmp_path / "replay").exists()


def test_without_the_replay_extra_the_error_says_what_to_install(bags, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "rosbags.typesys", None)  # as if not installed
    with pytest.raises(MissingExtra, match=r"pip install 'wise-perception\[replay\]'"):
        InputBag.open(bags["mcap"])
    code, err = run_cli(capsys, bags["mcap"])
    assert code == cli.EXIT_BAD_INPUT and "wise-perception[replay]" in err
