"""``wise-bench --track``: SAM2 tracking per frame, by stage, against its floor; frame rate; memory.

One tracker is seeded on the first frame of a synthetic moving-shapes stream of each size and
then fed ``--track-frames`` more frames. Each frame runs the image encoder, memory attention,
the mask decoder and the memory encoder (which writes the frame into the memory bank); forward
hooks time each module (synchronising CUDA), and torch's FLOP counter counts each module's
FLOPs on one frame, whose time at the device's measured matmul rate is the stage's floor
(:mod:`wise_dev.floors`). Also printed: the tracked frame rate, the time per frame early and
late in the stream, the tracker's state bytes and the process's resident memory at both points
(neither should grow: the memory bank is bounded).

Default: the tiny random SAM2 with video memory on the CPU. ``--full-size``: SAM2.1-Large's
published architecture (Hiera-L image encoder, 1024x1024 input, memory attention of 4 layers,
7 memories, 16 object pointers) with random weights, built on the device (a GPU).
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STAGES = ("encoder", "memory_attention", "decoder", "memory_encoder")
# Sam2VideoModel's modules per stage. The image encoder's output is projected for the mask
# decoder by two of the decoder's convolutions (conv_s0, conv_s1) once per frame: encoder work.
_STAGE_MODULES = {
    "encoder": ("vision_encoder", "mask_decoder.conv_s0", "mask_decoder.conv_s1"),
    "memory_attention": ("memory_attention",),
    "decoder": ("mask_decoder",),
    "memory_encoder": ("memory_encoder",),
}
_STREAM_FRAMES = 24  # a stream of this many distinct frames is looped for longer runs


@dataclass
class TrackRow:
    model: str
    size: str
    frames: int
    stage_ms: dict[str, float]  # mean per frame
    total_ms: dict[str, float]  # mean, p50, p90 of the whole step
    fps: float
    early_ms: float  # mean step time over the first 100 timed frames
    late_ms: float  # ... and over the last 100
    state_bytes: tuple[int, int]  # tracker state after the warm-up and at the end
    rss_mb: tuple[float, float]  # the process's resident set at the same points
    floors_ms: dict[str, float] = field(default_factory=dict)


class StageTimer:
    """Wall time of each stage's modules per call, by forward hooks (CUDA synchronised)."""

    def __init__(self, model: Any, device: str) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._cuda = str(device).startswith("cuda")
        self._handles = []
        for stage in STAGES:
            module = model.get_submodule(_STAGE_MODULES[stage][0])
            self._handles.append(module.register_forward_pre_hook(self._start))
            self._handles.append(module.register_forward_hook(self._stop(stage)))
        self._started = 0.0

    def _sync(self) -> None:
        if self._cuda:
            import torch

            torch.cuda.synchronize()

    def _start(self, *_: Any) -> None:
        self._sync()
        self._started = time.perf_counter()

    def _stop(self, stage: str) -> Any:
        def hook(*_: Any) -> None:
            self._sync()
            self.seconds[stage] += time.perf_counter() - self._started

        return hook

    def reset(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def stage_flops(tracker: Any, image: np.ndarray) -> dict[str, int]:
    """FLOPs of one tracked frame per stage (torch's counter, by module name)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, depth=3) as counter:
        tracker.step(image)
    by_module = {
        name.removeprefix("Sam2VideoModel."): sum(ops.values())
        for name, ops in counter.get_flop_counts().items()
    }
    flops = {
        stage: sum(by_module.get(m, 0) for m in mods) for stage, mods in _STAGE_MODULES.items()
    }
    # conv_s0/conv_s1 are children of mask_decoder in the module tree: count them once.
    flops["decoder"] -= flops["encoder"] - by_module.get("vision_encoder", 0)
    flops["total"] = by_module.get("Global", sum(flops.values()))
    return flops


def _rss_mb() -> float:
    """Resident set size of this process now (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stream(width: int, height: int) -> tuple[np.ndarray, Any]:
    from wise_perception.core.answer import ObjectPrompt

    from .moving_shapes import make_stream

    stream = make_stream(0, length=_STREAM_FRAMES, height=height, width=width)
    box, point = stream.prompt(0)
    return stream.frames, ObjectPrompt(box, (point,))


def run_tracking_bench(
    tracker: Any,
    model_name: str,
    *,
    sizes: Sequence[tuple[int, int]],
    frames: int,
    warmup: int,
    rates: Any = None,
    log: Any = None,
) -> list[TrackRow]:
    """One row per frame size (module doc); ``rates`` (floors.DeviceRates) adds the floors."""
    rows = []
    timer = StageTimer(tracker.model, tracker.device)
    try:
        for width, height in sizes:
            stream, target = _stream(width, height)
            tracker.start(stream[0], [target])
            for i in range(warmup):
                tracker.step(stream[(i + 1) % len(stream)])
            state_start, rss_start = tracker.memory().state_bytes, _rss_mb()
            timer.reset()
            steps = []
            for i in range(frames):
                steps.append(tracker.step(stream[(warmup + i + 1) % len(stream)]).seconds)
            stage_ms = {s: timer.seconds[s] / frames * 1e3 for s in STAGES}
            floors: dict[str, float] = {}
            if rates is not None:
                flops = stage_flops(tracker, stream[1])
                floors = {k: v / rates.flops * 1e3 for k, v in flops.items()}
            ms = [s * 1e3 for s in steps]
            window = min(100, max(len(ms) // 2, 1))
            rows.append(
                TrackRow(
                    model=model_name,
                    size=f"{width}x{height}",
                    frames=frames,
                    stage_ms=stage_ms,
                    total_ms={
                        "mean": statistics.fmean(ms),
                        "p50": float(np.percentile(ms, 50)),
                        "p90": float(np.percentile(ms, 90)),
                    },
                    fps=1e3 / statistics.fmean(ms),
                    early_ms=statistics.fmean(ms[:window]),
                    late_ms=statistics.fmean(ms[-window:]),
                    state_bytes=(state_start, tracker.memory().state_bytes),
                    rss_mb=(rss_start, _rss_mb()),
                    floors_ms=floors,
                )
            )
            if log:
                log(f"  tracked {frames} frames at {width}x{height}")
    finally:
        timer.close()
        tracker.close()
    return rows


def format_tracking_table(rows: Sequence[TrackRow]) -> str:
    head = (
        f"{'model':<28} {'image':>9} {'stage':>16} {'measured ms':>12} {'floor ms':>9} {'ratio':>7}"
    )
    lines = ["SAM2 tracking per frame (mean over the timed frames)", head, "-" * len(head)]
    for row in rows:
        cells = [(s, row.stage_ms[s]) for s in STAGES] + [("total", row.total_ms["mean"])]
        for stage, measured in cells:
            floor = row.floors_ms.get(stage, 0.0)
            ratio = f"{measured / floor:>7.1f}" if floor > 0 else f"{'-':>7}"
            floor_text = f"{floor:>9.3f}" if floor > 0 else f"{'-':>9}"
            lines.append(
                f"{row.model:<28} {row.size:>9} {stage:>16} {measured:>12.2f} {floor_text} {ratio}"
            )
    lines.append("")
    lines.append(
        f"{'model':<28} {'image':>9} {'frames':>7} {'fps':>7} {'p50 ms':>7} {'p90 ms':>7} "
        f"{'early ms':>9} {'late ms':>8} {'state KB':>15} {'RSS MB':>15}"
    )
    for row in rows:
        state = f"{row.state_bytes[0] / 1024:.0f}->{row.state_bytes[1] / 1024:.0f}"
        rss = f"{row.rss_mb[0]:.0f}->{row.rss_mb[1]:.0f}"
        lines.append(
            f"{row.model:<28} {row.size:>9} {row.frames:>7} {row.fps:>7.1f} "
            f"{row.total_ms['p50']:>7.1f} {row.total_ms['p90']:>7.1f} {row.early_ms:>9.1f} "
            f"{row.late_ms:>8.1f} {state:>15} {rss:>15}"
        )
    lines.append(
        "(total: preprocessing, the four stages, mask upsampling; floors: FLOPs at the measured "
        "matmul rate; early/late: first and last 100 frames)"
    )
    return "\n".join(lines)


# SAM2.1-Large's video memory (Meta's sam2.1_hiera_l.yaml, as transformers converts it; these
# are also Sam2VideoConfig's defaults): 4 memory-attention layers of width 256 over 64-wide
# memories, 7 memories, 16 object pointers, several masks while tracking.
SAM2_LARGE_MEMORY: dict[str, Any] = {
    "image_size": 1024,
    "num_maskmem": 7,
    "max_object_pointers_in_encoder": 16,
    "multimask_output_for_tracking": True,
    "memory_attention_hidden_size": 256,
    "memory_attention_num_layers": 4,
    "memory_attention_feed_forward_hidden_size": 2048,
    "memory_attention_rope_feat_sizes": [64, 64],
    "memory_encoder_hidden_size": 256,
    "memory_encoder_output_channels": 64,
    "mask_downsampler_embed_dim": 256,
    "memory_fuser_embed_dim": 256,
    "memory_fuser_intermediate_dim": 1024,
    "memory_fuser_num_layers": 2,
}


def full_size_tracker(device: str | None, dtype: Any) -> tuple[Any, str]:
    """Random-weight SAM2.1-Large with its video memory, built on the device."""
    import torch
    from transformers import Sam2VideoConfig, Sam2VideoModel

    from wise_perception.device import resolve_device, resolve_dtype
    from wise_perception.segmenter.sam2_video import Sam2VideoTracker

    from .bench import SAM2_LARGE
    from .tiny_models import sam2_processor, share_positional_encoding

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    config = Sam2VideoConfig(**SAM2_LARGE, **SAM2_LARGE_MEMORY)
    torch.manual_seed(0)
    with torch.device(device):
        model = Sam2VideoModel._from_config(config, dtype=torch_dtype).eval()
    share_positional_encoding(model)
    processor = sam2_processor(config.image_size, video=True)
    return Sam2VideoTracker(model, processor, device=device), "sam2.1-large (random)"


def tiny_tracker(cache_dir: Any, device: str | None, dtype: Any) -> tuple[Any, str]:
    from wise_perception.segmenter.sam2_video import Sam2VideoTracker

    from .tiny_models import tiny_sam2_video

    tracker = Sam2VideoTracker.from_pretrained(
        tiny_sam2_video(cache_dir), device=device, dtype=dtype
    )
    return tracker, "tiny-sam2-video"


def rows_as_json(rows: Sequence[TrackRow]) -> list[dict[str, Any]]:
    return [row.__dict__ for row in rows]
