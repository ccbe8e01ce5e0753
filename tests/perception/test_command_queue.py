"""The bounded command queue of the inference worker, with its idle work."""

from __future__ import annotations

import threading

from wise_perception.node.command_queue import CommandQueue


def test_bounded_oldest_first_and_refuses_when_full():
    jobs: CommandQueue[int] = CommandQueue(2)
    assert jobs.offer(1) and jobs.offer(2)
    assert not jobs.offer(3)  # full: refused at once, nothing queued
    assert len(jobs) == 2
    assert jobs.take(idle=lambda: None) == 1
    assert jobs.offer(3)
    assert [jobs.take(idle=lambda: None) for _ in range(2)] == [2, 3]


def test_close_serves_the_waiting_items_or_drops_them():
    jobs: CommandQueue[str] = CommandQueue(4)
    jobs.offer("a")
    jobs.close()
    assert not jobs.offer("b")  # closed: nothing more comes in
    assert jobs.take(idle=lambda: None) == "a"  # the waiting one is still served
    assert jobs.take(idle=lambda: None) is None
    dropping: CommandQueue[str] = CommandQueue(4)
    dropping.offer("a")
    assert dropping.close(drop_waiting=True) == ["a"]
    assert dropping.take(idle=lambda: None) is None


def test_idle_work_runs_once_per_poke_and_never_while_items_wait():
    jobs: CommandQueue[str] = CommandQueue(4)
    ran: list[int] = []
    woke = threading.Event()

    def idle() -> None:
        ran.append(len(jobs))
        woke.set()

    taken: list[str | None] = []
    worker = threading.Thread(target=lambda: taken.append(jobs.take(idle=idle)))
    worker.start()
    assert woke.wait(10)  # once at start
    woke.clear()
    jobs.poke()
    assert woke.wait(10)  # and once per poke
    jobs.offer("command")
    worker.join(10)
    assert taken == ["command"] and ran == [0, 0]
    jobs.offer("next")
    jobs.poke()
    assert jobs.take(idle=idle) == "next" and ran == [0, 0]  # a waiting item comes first
