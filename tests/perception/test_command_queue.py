"""The bounded command queue of the inference worker."""

from __future__ import annotations

from wise_perception.command_queue import CommandQueue


def test_bounded_oldest_first_and_refuses_when_full():
    jobs: CommandQueue[int] = CommandQueue(2)
    assert jobs.offer(1) and jobs.offer(2)
    assert not jobs.offer(3)  # full: refused at once, nothing queued
    assert len(jobs) == 2
    assert jobs.take() == 1
    assert jobs.offer(3)
    assert [jobs.take() for _ in range(2)] == [2, 3]


def test_close_serves_the_waiting_items_or_drops_them():
    jobs: CommandQueue[str] = CommandQueue(4)
    jobs.offer("a")
    jobs.close()
    assert not jobs.offer("b")  # closed: nothing more comes in
    assert jobs.take() == "a"  # the waiting one is still served
    assert jobs.take() is None
    dropping: CommandQueue[str] = CommandQueue(4)
    dropping.offer("a")
    assert dropping.close(drop_waiting=True) == ["a"]
    assert dropping.take() is None
