"""The WISE perception pipeline: RGB image + command -> mask, objects, rationale, #Tok, timings.

No ROS in here: the CLI, the ROS node, the benchmark and the evaluator all drive this class.

Flow of one request (``segment``)::

    validate command and image ──> resize to the policy frame, render the instruction
        │                                   │
        │                        policy.generate (prefill, decode)  ──> parse ──> map to pixels
        └─> SAM2 encode (worker thread, ──────────────────────────────────────┐      │
             cached per frame key)                                            └──> SAM2 decode per
                                                                                    object -> union

* SAM2's image encoder needs only the image, so it starts on a worker thread while the
  policy generates, and encodings are reused per frame (:mod:`.encode_cache`).
* The settings are checked first (:class:`SettingsError`: a bad value, an unknown backend, a
  device this machine lacks), then where the checkpoints come from is resolved
  (:mod:`.sources`), so a bad setting or a missing or unreachable checkpoint fails before
  anything loads, with what to do.
* The prompt mode is per request (``mode=``; the manifest's or the configured one by default):
  one loaded pipeline serves every mode, its prompt specs kept per mode.
* Per-request problems never raise: an invalid command or image, an unparsable completion or
  any internal failure comes back as a :class:`~wise_perception.result.Result` with a named
  :class:`~wise_perception.result.Status`. Loading (``from_pretrained``) does raise, with the
  path and the reason, so the caller (node, CLI) can report it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Hashable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .core.answer import ParsedAnswer, parse_completion
from .core.geometry import ResizeProtocol
from .core.limits import (
    DEFAULT_MAX_IMAGE_PIXELS,
    MAX_COMMAND_CHARS,
    CheckedImage,
    image_size_problem,
)
from .core.manifest import Manifest
from .core.prompts import (
    AnswerSchema,
    PromptMode,
    PromptSpec,
    Question,
    build_instruction,
    spec_for,
)
from .core.tokens import reasoning_tokens
from .device import release_cuda_memory, resolve_device, resolve_dtype
from .encode_cache import EncodeCache, Encoded, frame_key_of
from .policy.base import PolicyBackend, PolicyOutput, PolicyUnavailable
from .result import ObjectResult, Result, Status, Timings, mask_union
from .segmenter.base import Segmenter
from .sources import check_reachable, manifest_for, segmenter_source
from .tracking import Track, TrackSettings, TrackUpdate

LOG = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "PipelineConfig",
    "SettingsError",
    "TrackSettings",
    "WisePipeline",
    "frame_key_of",
]


class SettingsError(ValueError):
    """A setting given to :meth:`WisePipeline.from_pretrained` cannot be served: a bad value
    (``max_new_tokens=0``), an unknown backend, dtype or mode, a device this machine lacks.
    Raised before any model loads; the message names the setting."""


_CONTRACT = Manifest()  # the defaults of a checkpoint without a manifest


@dataclass(frozen=True)
class PipelineConfig:
    """How the pipeline prompts the policy and bounds its inputs (manifest or explicit values)."""

    # The checkpoint's contract: the manifest's fields and defaults (core.manifest). ``mode``
    # is the default of requests that name none.
    mode: str = _CONTRACT.prompt_mode
    brevity: str | None = _CONTRACT.brevity  # only used by wise_s
    schema: str = _CONTRACT.answer_schema
    policy_frame: int = _CONTRACT.policy_frame
    max_new_tokens: int = _CONTRACT.max_new_tokens
    # How it is served.
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # 0: no limit (core.limits)
    max_command_chars: int = MAX_COMMAND_CHARS
    cache_size: int = 4  # image encodings kept (LRU); 0 disables the cache
    batch_size: int = 8  # segment_batch: images per policy.generate call
    concurrent_encode: bool = True  # SAM2 encode on a worker thread while the policy generates

    def __post_init__(self) -> None:
        PromptMode(self.mode)
        AnswerSchema(self.schema)
        ResizeProtocol(self.policy_frame)
        positive = {
            "max_new_tokens": self.max_new_tokens,
            "max_command_chars": self.max_command_chars,
            "batch_size": self.batch_size,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name, value in (
            ("cache_size", self.cache_size),
            ("max_image_pixels", self.max_image_pixels),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.spec()  # wise_s without a brevity instruction fails here, at load time

    @classmethod
    def from_manifest(cls, manifest: Manifest, **overrides: Any) -> PipelineConfig:
        """The manifest's contract, with ``overrides`` (any field) on top."""
        contract = {
            "mode": manifest.prompt_mode,
            "brevity": manifest.brevity,
            "schema": manifest.answer_schema,
            "policy_frame": manifest.policy_frame,
            "max_new_tokens": manifest.max_new_tokens,
        }
        return cls(**{**contract, **overrides})

    def spec(self, mode: str | None = None) -> PromptSpec:
        """The prompt spec of ``mode`` (default: ``self.mode``) with this config's brevity and
        answer schema; ValueError for an unknown mode or wise_s without a brevity."""
        return spec_for(mode or self.mode, brevity=self.brevity, schema=self.schema)


def stop_strings(spec: PromptSpec) -> tuple[str, ...]:
    """Where generation ends: after the mode's last span (``</answer>`` in every mode but
    wise_f), so a checkpoint trained to write ``<d_think>`` after its answer does not spend
    tokens on it when served in wise / wise_s (paper §3.3: d_think is omitted)."""
    return (f"</{spec.order[-1]}>",)


@dataclass
class _Request:
    """A validated request between preparation and completion."""

    command: str
    spec: PromptSpec
    image: np.ndarray
    frame: np.ndarray  # the policy-frame image
    instruction: str
    encoding: Future[Encoded]
    cache_hit: bool
    result: Result
    started: float
    timings: Timings = field(default_factory=Timings)


class WisePipeline:
    """Owns the policy and the segmenter; ``segment`` / ``segment_batch`` are thread-safe."""

    def __init__(
        self,
        policy: PolicyBackend,
        segmenter: Segmenter,
        config: PipelineConfig | None = None,
        *,
        tokenizer: Any = None,
        owns_models: bool = True,
    ) -> None:
        """``owns_models=False``: :meth:`close` leaves the policy and segmenter open (for
        pipelines sharing models with another, e.g. in the benchmark and tests)."""
        self.policy = policy
        self.segmenter = segmenter
        self.config = config or PipelineConfig()
        self._specs: dict[str, PromptSpec] = {}
        self.spec = self.prompt_spec()  # the default mode's
        self.resize = ResizeProtocol(self.config.policy_frame)
        # #Tok is counted with the policy's own tokenizer (core.tokens).
        self.tokenizer = tokenizer if tokenizer is not None else policy.tokenizer
        self.encodings = EncodeCache(
            segmenter, self.config.cache_size, concurrent=self.config.concurrent_encode
        )
        self.owns_models = owns_models
        self._closed = False
        self.manifest: Manifest | None = None

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        policy: str | Path,
        segmenter: str | Path | None = None,
        *,
        device: str | None = None,
        dtype: Any = None,
        compile: bool = False,
        policy_backend: str = "auto",
        segmenter_backend: str = "auto",
        policy_options: dict[str, Any] | None = None,
        segmenter_options: dict[str, Any] | None = None,
        **config: Any,
    ) -> WisePipeline:
        """Load the models once.

        ``policy``: a WISE checkpoint folder exported by training (its ``wise_manifest.json``
        gives the prompt mode, brevity, answer schema, policy frame, segmenter, token budget
        and system prompt, so nothing else is needed), a plain Hugging Face folder or hub id
        (wise_s defaults), or a vLLM server URL. ``config``: :class:`PipelineConfig` fields
        (``mode``, ``brevity``, ``max_new_tokens``, ``max_image_pixels``, ``cache_size``...), as
        ``from_pretrained(..., **kwargs)`` overrides a Hugging Face config: they override the
        manifest; ``None`` or ``""`` means "not given". ``compile`` (CUDA): compiled decode
        steps, prefill and vision tower, and SAM2's encoder. Raises, before anything loads,
        :class:`SettingsError` (a ``ValueError``) for a bad setting, ``TypeError`` for an unknown
        setting's name, ``FileNotFoundError`` for a missing local folder, ``ManifestError`` for
        a bad manifest, ``CheckpointUnavailable`` for an unreachable hub id; then whatever the
        loaders raise (``CheckpointError`` naming a corrupted weights file).
        """
        from .policy import load_policy
        from .segmenter import load_segmenter

        unknown = sorted(set(config) - set(PipelineConfig.__dataclass_fields__))
        if unknown:
            raise TypeError(
                f"unknown pipeline settings {unknown}; choose from "
                f"{sorted(PipelineConfig.__dataclass_fields__)}"
            )
        given = {k: v for k, v in config.items() if v is not None and v != ""}
        check_settings(given, device, dtype, policy_backend, segmenter_backend)
        source = str(policy)
        manifest = manifest_for(source)
        try:
            pipeline_config = PipelineConfig.from_manifest(manifest or Manifest(), **given)
        except ValueError as exc:  # a setting that does not fit the checkpoint's manifest
            raise SettingsError(f"{exc} (with the manifest of {source})") from exc
        seg_source = segmenter_source(segmenter or None, manifest, source)
        check_reachable(source, "policy")
        check_reachable(seg_source, "segmenter")
        LOG.info(
            "loading policy %s (mode %s) and segmenter %s", source, pipeline_config.mode, seg_source
        )
        options, seg_options = dict(policy_options or {}), dict(segmenter_options or {})
        if compile:
            options.setdefault("compile", True)
            seg_options.setdefault("compile", True)
        if manifest is not None and manifest.system_prompt:
            # The envelope the checkpoint was trained with (core.prompts.chat_messages).
            options.setdefault("system_prompt", manifest.system_prompt)
        with _library_progress_bars_off():
            policy_obj = load_policy(
                source,
                backend=policy_backend,
                device=device,
                dtype=dtype,
                max_new_tokens=pipeline_config.max_new_tokens,
                **options,
            )
            try:
                segmenter_obj = load_segmenter(
                    seg_source, backend=segmenter_backend, device=device, dtype=dtype, **seg_options
                )
            except BaseException:
                policy_obj.close()
                raise
        pipeline = cls(policy_obj, segmenter_obj, pipeline_config)
        pipeline.manifest = manifest
        return pipeline

    @classmethod
    def from_parameters(cls, parameters: Any) -> WisePipeline:
        """The pipeline the node's parameters name: the node's settings, or the bag replay's
        (the same names). Empty ``segmenter_model``, ``mode``, ``brevity`` and
        ``max_new_tokens: 0`` mean "the checkpoint's manifest, else the default"; the input
        limits are the node's, so what it accepts the pipeline serves unchecked."""
        # Options of the transformers engine, passed only when they differ from its defaults (a
        # vLLM policy has no such options and refuses them, by name, at load).
        engine_options: dict[str, Any] = {}
        if not parameters.forced_schema:
            engine_options["forced_schema"] = False
        if parameters.int8_decode:
            engine_options["int8_decode"] = True
        return cls.from_pretrained(
            policy=parameters.policy_model,
            segmenter=parameters.segmenter_model or None,
            device=parameters.device,
            dtype=parameters.dtype,
            mode=parameters.mode or None,
            brevity=parameters.brevity or None,
            max_new_tokens=parameters.max_new_tokens or None,
            compile=parameters.compile,  # the policy's decode and prefill, and SAM2's encoder
            policy_options=engine_options or None,
            max_image_pixels=parameters.max_image_pixels,
            max_command_chars=parameters.max_command_chars,
        )

    # ------------------------------------------------------------------ public API

    def segment(
        self,
        image: np.ndarray | CheckedImage,
        command: str | Question,
        *,
        frame_key: Hashable | None = None,
        mode: str | None = None,
    ) -> Result:
        """Segment what ``command`` asks for in ``image`` (HxWx3 uint8 RGB), prompted in
        ``mode`` (default: ``config.mode``). Never raises on a request's data; an unknown
        ``mode`` is the caller's bug (ValueError, as from :meth:`prompt_spec`).

        An image or command already checked where it came in (a ``CheckedImage``, a
        ``Question``) within this pipeline's limits is not checked again.
        """
        return self._serve(image, command, frame_key, self.prompt_spec(mode), cache=True)

    def prompt_spec(self, mode: str | None = None) -> PromptSpec:
        """The prompt spec of ``mode`` (default: ``config.mode``) with the configured brevity
        and answer schema, made once per mode; ValueError for an unknown mode or wise_s without
        a brevity instruction."""
        key = mode or self.config.mode
        spec = self._specs.get(key)
        if spec is None:
            spec = self._specs[key] = self.config.spec(key)
        return spec

    def encode_ahead(
        self, image: np.ndarray | CheckedImage, frame_key: Hashable
    ) -> Future[Encoded]:
        """Start SAM2's encoding of a frame before a command asks for it (the node does, while
        idle), so that ``segment(..., frame_key=frame_key)`` finds it cached or in flight.
        Returns the encoding's future, at once with ``concurrent_encode`` (the default); a
        frame whose encoding is cached or in flight is not encoded again. ValueError for an
        image that cannot be served."""
        if self._closed:
            raise RuntimeError("the pipeline is closed")
        pixels, problem = self._pixels(image)
        if problem:
            raise ValueError(problem)
        return self.encodings.get(frame_key, np.ascontiguousarray(pixels))[0]

    def track(
        self,
        image: np.ndarray | CheckedImage,
        result: Result,
        settings: TrackSettings | None = None,
        *,
        at: float | None = None,
    ) -> tuple[Track, TrackUpdate]:
        """Reason once, then track: follow ``result``'s objects (an ``ok`` answer) from
        ``image``, the frame it was answered on, with SAM2's video memory. One tracker per
        call (per tracked command); the policy takes no part. Returns the track and its seed
        frame's update; ``Track.update(frame)`` follows each newer frame (:mod:`.tracking`).
        Raises ``TrackingUnsupported`` where the segmenter cannot track (the reason in its
        message), ValueError for an image or a result that cannot be tracked."""
        if self._closed:
            raise RuntimeError("the pipeline is closed")
        pixels, problem = self._pixels(image)
        if problem:
            raise ValueError(problem)
        track = Track(self.segmenter.tracker(), settings)
        return track, track.start(np.ascontiguousarray(pixels), result, at=at)

    def _serve(
        self,
        image: Any,
        command: Any,
        frame_key: Hashable | None,
        spec: PromptSpec,
        *,
        cache: bool,
    ) -> Result:
        started = time.perf_counter()
        try:
            prepared = self._prepare(image, command, frame_key, spec, started, cache=cache)
            if isinstance(prepared, Result):
                return prepared
            try:
                output = self.policy.generate(
                    [prepared.frame], [prepared.instruction], spec=spec, stop=stop_strings(spec)
                )[0]
            except Exception as exc:
                return self._fail(prepared, *_policy_failure(exc))
            return self._finish(prepared, output)
        except Exception as exc:  # never raise per request
            LOG.exception("segment failed")
            return Result.failure(
                _safe_command(command),
                Status.INTERNAL_ERROR,
                _describe(exc),
                mode=spec.mode,
                timings=Timings(total=time.perf_counter() - started),
            )

    def segment_batch(
        self,
        images: Sequence[np.ndarray],
        commands: Sequence[str],
        *,
        frame_keys: Sequence[Hashable | None] | None = None,
        mode: str | None = None,
    ) -> list[Result]:
        """One result per (image, command), in order, every one prompted in ``mode`` (default:
        ``config.mode``); the policy generates in batches of ``config.batch_size`` (left
        padding). Per-sample problems never raise; mismatched list lengths or an unknown mode
        (a caller bug) raise ValueError.

        Timings: prefill/decode are those of the batch the sample was in; ``total`` is the
        sample's own preprocessing and segmentation plus its batch's generation time.
        """
        if len(images) != len(commands):
            raise ValueError(f"{len(images)} images for {len(commands)} commands")
        keys = list(frame_keys) if frame_keys is not None else [None] * len(images)
        if len(keys) != len(images):
            raise ValueError(f"{len(keys)} frame keys for {len(images)} images")
        spec = self.prompt_spec(mode)
        stop = stop_strings(spec)
        results: list[Result | None] = [None] * len(images)
        pending: list[tuple[int, _Request]] = []
        prep_s: dict[int, float] = {}
        for i, (image, command, key) in enumerate(zip(images, commands, keys, strict=True)):
            started = time.perf_counter()
            try:
                prepared = self._prepare(image, command, key, spec, started)
            except Exception as exc:
                LOG.exception("segment_batch: preparing sample %d failed", i)
                prepared = Result.failure(
                    _safe_command(command),
                    Status.INTERNAL_ERROR,
                    _describe(exc),
                    mode=spec.mode,
                )
            if isinstance(prepared, Result):
                results[i] = prepared
            else:
                pending.append((i, prepared))
                prep_s[i] = time.perf_counter() - started
        size = self.config.batch_size
        for chunk_start in range(0, len(pending), size):
            chunk = pending[chunk_start : chunk_start + size]
            gen_start = time.perf_counter()
            try:
                outputs = self.policy.generate(
                    [r.frame for _, r in chunk],
                    [r.instruction for _, r in chunk],
                    spec=spec,
                    stop=stop,
                )
                if len(outputs) != len(chunk):
                    raise RuntimeError(
                        f"policy returned {len(outputs)} outputs for {len(chunk)} prompts"
                    )
            except Exception as exc:
                for i, request in chunk:
                    results[i] = self._fail(request, *_policy_failure(exc))
                continue
            generation = time.perf_counter() - gen_start
            for (i, request), output in zip(chunk, outputs, strict=True):
                finish_start = time.perf_counter()
                try:
                    result = self._finish(request, output)
                except Exception as exc:
                    LOG.exception("segment_batch: sample %d failed", i)
                    result = self._fail(request, Status.INTERNAL_ERROR, _describe(exc))
                # total = own preparation + the batch's generation + own finishing.
                result.timings.total = prep_s[i] + generation + time.perf_counter() - finish_start
                results[i] = result
        return [
            r if r is not None else Result.failure("", Status.INTERNAL_ERROR, "no result")
            for r in results
        ]

    def close(self) -> None:
        """Free the models and their GPU memory (unless ``owns_models`` is False); later
        requests get ``not_ready``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.encodings.close()
        if not self.owns_models:
            return
        for part in (self.policy, self.segmenter):
            try:
                part.close()
            except Exception:
                LOG.exception("closing %s failed", type(part).__name__)
        release_cuda_memory()

    def warmup(self, command: str = "the object in the middle") -> Result:
        """Serve one request on a synthetic gray frame and return its result (its status says
        whether the policy could be reached; ``timings.total`` its seconds).

        The first request on a GPU pays for lazy CUDA initialisation (and, with a compiling
        policy backend, the compilation); doing it here keeps that off the first real command.
        """
        size = self.config.policy_frame
        if self.config.max_image_pixels:  # within the pipeline's own limit (it is resized anyway)
            size = min(size, math.isqrt(self.config.max_image_pixels))
        # Not cached: the synthetic frame must not evict a camera frame's encoding.
        frame = np.full((size, size, 3), 127, np.uint8)
        return self._serve(frame, command, ("wise-warmup",), self.spec, cache=False)

    def __enter__(self) -> WisePipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """What was loaded, resolved (for the node's and the CLI's logs). Reads values kept at
        load time: never does I/O (a policy server that is down is described all the same)."""
        return {
            "policy": self.policy.info().as_dict(),
            "segmenter": self.segmenter.info().as_dict(),
            "mode": self.config.mode,
            "brevity": self.spec.brevity or "",
            "max_new_tokens": self.config.max_new_tokens,
            "manifest": self.manifest is not None,
        }

    def cache_info(self) -> dict[str, int]:
        return self.encodings.info()

    # ------------------------------------------------------------------ steps

    def _prepare(
        self,
        image: Any,
        command: Any,
        frame_key: Hashable | None,
        spec: PromptSpec,
        started: float,
        *,
        cache: bool = True,
    ) -> Result | _Request:
        mode = spec.mode
        text = _safe_command(command)
        if self._closed:
            return Result.failure(text, Status.NOT_READY, "the pipeline is closed", mode=mode)
        size = _size_of(image)
        try:  # the one check of the command: rendering it validates it (core.prompts)
            instruction = build_instruction(command, spec, max_chars=self.config.max_command_chars)
        except ValueError as exc:
            return Result.failure(
                text, Status.INVALID_COMMAND, str(exc), mode=mode, image_size=size
            )
        image, problem = self._pixels(image)
        if problem:
            return Result.failure(text, Status.INVALID_IMAGE, problem, mode=mode, image_size=size)
        height, width = image.shape[:2]
        image = np.ascontiguousarray(image)
        frame = self.resize.resize(image)
        key = frame_key if frame_key is not None else frame_key_of(image)
        encoding, hit = self.encodings.get(key, image, cache=cache)
        timings = Timings(preprocess=time.perf_counter() - started)
        result = Result(command=text, status=Status.OK, image_size=(width, height), mode=mode)
        return _Request(
            text, spec, image, frame, instruction, encoding, hit, result, started, timings
        )

    def _pixels(self, image: Any) -> tuple[Any, str]:
        """The pixels to serve and why they cannot be ("" when they can). An image checked where
        it came in, within this pipeline's limit, is not checked again."""
        if isinstance(image, CheckedImage):
            if image.within(self.config.max_image_pixels):
                return image.pixels, ""
            image = image.pixels
        return image, self._image_problem(image)

    def _image_problem(self, image: Any) -> str:
        if not isinstance(image, np.ndarray):
            return f"image must be a numpy array, got {type(image).__name__}"
        if image.dtype != np.uint8:
            return f"image must be uint8, got {image.dtype}"
        if image.ndim != 3 or image.shape[2] != 3:
            return f"image must be HxWx3 RGB, got shape {image.shape}"
        height, width = image.shape[:2]
        return image_size_problem(width, height, self.config.max_image_pixels)

    def _finish(self, request: _Request, output: PolicyOutput) -> Result:
        result, timings = request.result, request.timings
        timings.policy_prefill = output.prefill_s
        timings.policy_decode = output.decode_s
        result.completion = output.text
        result.generated_tokens = output.generated_tokens
        parsed = parse_completion(
            output.text,
            schema=request.spec.schema,
            frame=(self.config.policy_frame, self.config.policy_frame),
        )
        result.rationale = parsed.think or ""
        result.detailed_rationale = parsed.d_think or ""
        if self.tokenizer is not None:  # #Tok, the paper's metric (core.tokens)
            result.reasoning_tokens = reasoning_tokens(output.text, self.tokenizer)
        if not isinstance(parsed, ParsedAnswer):
            return self._fail(request, Status.UNPARSABLE_ANSWER, parsed.message())
        width, height = result.image_size
        objects = [self.resize.object_to_image(obj, width, height) for obj in parsed.objects]
        encoded = request.encoding.result()
        timings.segmenter_encode = 0.0 if request.cache_hit else encoded.seconds
        decode_start = time.perf_counter()
        segmented = self.segmenter.decode(encoded.encoding, objects)
        timings.segmenter_decode = time.perf_counter() - decode_start
        for obj, seg in zip(objects, segmented, strict=True):
            result.objects.append(
                ObjectResult(box=obj.box, points=obj.points, score=seg.score, mask=seg.mask)
            )
        result.mask = mask_union([seg.mask for seg in segmented], (height, width))
        result.status = Status.OK
        timings.total = time.perf_counter() - request.started
        result.timings = timings
        return result

    def _fail(self, request: _Request, status: Status, error: str) -> Result:
        result = request.result
        result.objects = []
        result.status = status
        result.error = error
        width, height = result.image_size
        result.mask = np.zeros((height, width), dtype=bool)
        request.timings.total = time.perf_counter() - request.started
        result.timings = request.timings
        return result


# ---------------------------------------------------------------------- helpers


@contextmanager
def _library_progress_bars_off() -> Iterator[None]:
    """transformers draws a "Loading weights" bar per model (two per load, more per shard),
    which floods a node's log and the CLI's console; callers report loading as one stage."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # a vLLM-server client without transformers
        yield
        return
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def check_settings(
    given: dict[str, Any],
    device: str | None,
    dtype: Any,
    policy_backend: str,
    segmenter_backend: str,
) -> None:
    """Every setting that can be checked without the checkpoint, checked (SettingsError): the
    given config values, the backends' names, the device (CUDA asked where there is none) and
    the dtype. Costs a torch import, not a model load."""
    from .policy import BACKENDS as POLICY_BACKENDS
    from .segmenter import BACKENDS as SEGMENTER_BACKENDS

    for role, backend, known in (
        ("policy", policy_backend, POLICY_BACKENDS),
        ("segmenter", segmenter_backend, SEGMENTER_BACKENDS),
    ):
        if backend != "auto" and backend not in known:
            raise SettingsError(
                f"unknown {role} backend {backend!r}; choose one of {', '.join(known)} or auto"
            )
    try:
        PipelineConfig(**given)
        resolve_dtype(dtype, resolve_device(device))
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


def _policy_failure(exc: Exception) -> tuple[Status, str]:
    """The status and message of a failed generation: a policy that cannot be reached now is
    named as such (a later request may succeed), anything else is an internal error."""
    if isinstance(exc, PolicyUnavailable):
        LOG.warning("policy unavailable: %s", exc)
        return Status.POLICY_UNAVAILABLE, str(exc)
    LOG.exception("policy generation failed")
    return Status.INTERNAL_ERROR, f"policy failed: {_describe(exc)}"


def _size_of(image: Any) -> tuple[int, int]:
    """(width, height) of anything image-like, (0, 0) otherwise: failures still report it."""
    shape = getattr(image, "shape", ())
    return (int(shape[1]), int(shape[0])) if len(shape) >= 2 else (0, 0)


def _safe_command(command: Any) -> str:
    """The command as sent, for the result's echo ("" for anything that is not text)."""
    if isinstance(command, Question):
        return command.sent
    return command if isinstance(command, str) else ""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
