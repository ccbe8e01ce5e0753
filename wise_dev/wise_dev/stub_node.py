"""A node process with a stub pipeline (~zero compute, no models), for the node tests and
the node overhead benchmark.

    python -m wise_dev.stub_node [--load-delay-s S] --ros-args -r __ns:=/wise -p ...

``--load-delay-s`` makes the stub's "loading" sleep S seconds, standing in for the
multi-minute load of a 7B checkpoint.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Hashable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from wise_perception.core.answer import ObjectPrompt
from wise_perception.core.limits import CheckedImage
from wise_perception.core.prompts import Question
from wise_perception.result import ObjectResult, Result, Status, Timings


class StubPipeline:
    """A node pipeline with ~zero compute: a centred box mask, so only the node's cost remains."""

    def segment(
        self, image: CheckedImage, command: Question, *, frame_key: Hashable | None = None
    ) -> Result:
        start = time.perf_counter()
        height, width = image.shape[:2]
        mask = np.zeros((height, width), dtype=bool)
        box = (width / 4, height / 4, 3 * width / 4, 3 * height / 4)
        mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = True
        obj = ObjectPrompt(box=box, points=((width / 2, height / 2),))
        total = time.perf_counter() - start
        return Result(
            command=command.sent,
            status=Status.OK,
            rationale="the stub always picks the centre.",
            objects=[ObjectResult(box=obj.box, points=obj.points, score=1.0)],
            mask=mask,
            image_size=(width, height),
            timings=Timings(total=total),
            mode="stub",
        )

    def encode_ahead(self, image: CheckedImage, frame_key: Hashable) -> Future[None]:
        """Nothing to encode: the stub's "encoding" is done at once."""
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def track(self, image: CheckedImage, result: Result, settings: Any = None, **_: Any) -> Any:
        """The stub has no SAM2 to track with."""
        from wise_perception.segmenter import TrackingUnsupported

        raise TrackingUnsupported("the stub pipeline does not track")

    def cache_info(self) -> dict[str, int]:
        return {"size": 0, "capacity": 0, "hits": 0, "misses": 0}

    def warmup(self) -> Result:
        return Result(command="warm-up", status=Status.OK, mode="stub")

    def describe(self) -> dict[str, Any]:
        stub = {"name": "stub", "backend": "StubPipeline", "device": "cpu", "dtype": ""}
        return {"policy": stub, "segmenter": stub, "mode": "stub"}

    def close(self) -> None:
        pass


def stub_factory(settings: object, load_delay_s: float = 0.0) -> StubPipeline:
    """The stub pipeline; ``load_delay_s`` stands in for the load time of real models."""
    time.sleep(load_delay_s)
    return StubPipeline()


def main(argv: Sequence[str] | None = None) -> int:
    from wise_perception.node.lifecycle import main as node_main

    argv = list(sys.argv[1:] if argv is None else argv)
    delay = 0.0
    if argv[:1] == ["--load-delay-s"]:
        delay, argv = float(argv[1]), argv[2:]
    return node_main(
        args=[sys.argv[0], *argv],
        pipeline_factory=lambda settings: stub_factory(settings, delay),
    )


if __name__ == "__main__":
    sys.exit(main())
