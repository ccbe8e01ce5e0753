"""Client of a vLLM OpenAI-compatible server (``vllm serve <checkpoint>``), so several robots
share one GPU.

:class:`VllmServerPolicy` uses the standard library only: ``POST /v1/chat/completions`` with the
image as a base64 PNG data URL, greedy, streamed (server-sent events), so the time to the first
streamed token is the prefill time. #Tok needs the policy tokenizer: a local ``tokenizer=``
folder, else the server's ``POST /tokenize`` endpoint. Every request has a bounded timeout and a
bounded number of attempts; a server that cannot be reached raises
:class:`PolicyUnavailableError`. Only requests talk to the server: making the client, reading
its attributes and :meth:`VllmServerPolicy.info` never do, so a client can describe itself
while its server is down. ``structured_output=True`` sends vLLM's structured outputs of the
request's prompt spec (:mod:`.vllm_structured`).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..backend_info import BackendInfo
from ..core.manifest import DEFAULT_MAX_NEW_TOKENS
from ..core.prompts import PromptSpec, chat_messages
from .base import PolicyBackend, PolicyOutput, PolicyUnavailable
from .vllm_structured import structured_regex

LOG = logging.getLogger(__name__)


class PolicyServerError(RuntimeError):
    """The vLLM server answered with an error or something that is not a completion."""


class PolicyUnavailableError(PolicyServerError, PolicyUnavailable):
    """The vLLM server could not be reached (refused, unreachable, timed out, stream broken)."""


class RemoteTokenizer:
    """Counts tokens with the server's ``POST /tokenize`` (vLLM's OpenAI server has it)."""

    def __init__(self, client: VllmServerPolicy) -> None:
        self.client = client

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        body = {
            "model": self.client.served_model(),
            "prompt": text,
            "add_special_tokens": add_special_tokens,
        }
        data = self.client._post_json("/tokenize", body)
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list):
            raise PolicyServerError(f"{self.client.url}/tokenize answered without a 'tokens' list")
        return [int(t) for t in tokens]


class VllmServerPolicy(PolicyBackend):
    """Client of a vLLM OpenAI-compatible server (``vllm serve <checkpoint>``).

    ``model`` is the served model name (default: the first one ``GET /v1/models`` lists, asked
    by the first request, so a client can start before its server; :meth:`served_model`). ``tokenizer`` is a local folder
    with the policy tokenizer for #Tok (default: the server's ``/tokenize``). Requests of one
    batch are sent concurrently (the server batches them), at most ``max_concurrency`` at once.

    Timeouts and retries (every request is bounded): ``timeout_s`` bounds each connect and each
    socket read (a stream that stalls longer than that fails); a connection that is refused or
    unreachable (nothing was sent, so nothing can be served twice) is retried ``retries`` more
    times, ``retry_wait_s`` apart; anything else is not retried. So a dead server fails a
    request within about ``(retries + 1) * connect time + retries * retry_wait_s`` (well under a
    second on a local network with the defaults) with :class:`PolicyUnavailableError`, and the
    next request tries again: the client recovers by itself when the server is back.
    ``structured_output``: see the module docstring (sent as vLLM's ``structured_outputs``).
    """

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        timeout_s: float = 120.0,
        tokenizer: str | Path | Any | None = None,
        api_key: str | None = None,
        system_prompt: str | None = None,
        stream: bool = True,
        max_concurrency: int = 8,
        retries: int = 2,
        retry_wait_s: float = 0.25,
        structured_output: bool | str = False,
        device: str | None = None,
        dtype: Any = None,
        compile: bool = False,
    ) -> None:
        del device, dtype, compile  # the server's choices
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"server URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/").removesuffix("/v1")
        self.timeout_s = float(timeout_s)
        self.max_new_tokens = int(max_new_tokens)
        self.api_key = api_key
        self.system_prompt = system_prompt
        self.stream = stream
        self.max_concurrency = max(1, int(max_concurrency))
        self.retries = max(0, int(retries))
        self.retry_wait_s = max(0.0, float(retry_wait_s))
        self.structured_output = structured_output
        self._model = model or None  # the served model's name once known
        if tokenizer is None:
            self.tokenizer: Any = RemoteTokenizer(self)
        elif isinstance(tokenizer, str | Path):
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), trust_remote_code=False)
        else:
            self.tokenizer = tokenizer

    def served_model(self) -> str:
        """The served model's name: as given, else asked from ``GET /v1/models`` (once, by the
        first request that needs it; raises like a request when the server is down)."""
        if self._model is None:
            self._model = self._first_model()
        return self._model

    def info(self) -> BackendInfo:
        """The server URL and model name as given (or as learnt): no request is made."""
        name = f"{self.url}#{self._model}" if self._model else self.url
        return BackendInfo(name, "vllm-server")

    # -------------------------------------------------------------- HTTP

    def _request(self, path: str, body: dict[str, Any] | None = None) -> urllib.request.Request:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return urllib.request.Request(
            self.url + path,
            data=data,
            headers=headers,
            method="POST" if body is not None else "GET",
        )

    def _open(self, request: urllib.request.Request) -> Any:
        """``urlopen`` with the timeout; refused/unreachable connections retried (bounded)."""
        for attempt in range(self.retries + 1):
            try:
                return urllib.request.urlopen(request, timeout=self.timeout_s)
            except urllib.error.HTTPError as exc:
                detail = exc.read(2000).decode("utf-8", "replace")
                raise PolicyServerError(
                    f"vLLM server {request.full_url} answered HTTP {exc.code}: "
                    f"{detail.strip()[:500] or exc.reason}"
                ) from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                # Refused/reset/unreachable: retried. A timeout is not (it already took long).
                refused = isinstance(reason, OSError) and not isinstance(reason, TimeoutError)
                if refused and attempt < self.retries:
                    time.sleep(self.retry_wait_s)
                    continue
                tries = attempt + 1
                raise PolicyUnavailableError(
                    f"policy server unreachable: {request.full_url} "
                    f"({tries} attempt{'s' if tries > 1 else ''}, timeout {self.timeout_s:g} s): "
                    f"{reason}"
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _post_json(self, path: str, body: dict[str, Any] | None = None) -> Any:
        with self._open(self._request(path, body)) as response:
            raw = _read_bounded(response)
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PolicyServerError(
                f"vLLM server {self.url}{path} did not answer JSON: {raw[:200]!r}"
            ) from exc

    def _first_model(self) -> str:
        data = self._post_json("/v1/models")
        try:
            return str(data["data"][0]["id"])
        except (KeyError, IndexError, TypeError) as exc:
            raise PolicyServerError(
                f"{self.url}/v1/models lists no model: {str(data)[:200]}"
            ) from exc

    # -------------------------------------------------------------- generation

    @staticmethod
    def image_data_url(image: np.ndarray) -> str:
        """Lossless PNG data URL of an RGB uint8 image."""
        import cv2

        ok, png = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]))
        if not ok:
            raise ValueError("could not encode the image as PNG")
        return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")

    def _body(
        self,
        image: np.ndarray,
        instruction: str,
        stop: Sequence[str] = (),
        spec: PromptSpec | None = None,
    ) -> dict[str, Any]:
        image_part = {"type": "image_url", "image_url": {"url": self.image_data_url(image)}}
        body: dict[str, Any] = {
            "model": self.served_model(),
            "messages": chat_messages(instruction, system=self.system_prompt, image=image_part),
            "max_tokens": self.max_new_tokens,
            "temperature": 0.0,
            "stream": self.stream,
        }
        if stop:
            body["stop"] = list(stop)
            body["include_stop_str_in_output"] = True  # vLLM's extra sampling parameter
        regex = structured_regex(self.structured_output, spec)
        if regex is not None:
            body["structured_outputs"] = {"regex": regex}  # vLLM's extra parameter
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def _one(
        self,
        image: np.ndarray,
        instruction: str,
        stop: Sequence[str] = (),
        spec: PromptSpec | None = None,
    ) -> PolicyOutput:
        body = self._body(image, instruction, stop, spec)
        request = self._request("/v1/chat/completions", body)
        start = time.perf_counter()
        if not self.stream:
            with self._open(request) as response:
                raw = _read_bounded(response)
            end = time.perf_counter()
            try:
                data = json.loads(raw)
                text = data["choices"][0]["message"]["content"] or ""
            except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
                raise PolicyServerError(
                    f"unexpected chat completion from {self.url}: {raw[:200]!r}"
                ) from exc
            tokens = int((data.get("usage") or {}).get("completion_tokens", 0))
            return PolicyOutput(
                text=text, generated_tokens=tokens, prefill_s=0.0, decode_s=end - start
            )
        parts: list[str] = []
        try:
            tokens, chunks, first = self._read_stream(request, parts)
        except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
            if isinstance(exc, PolicyServerError):
                raise
            raise PolicyUnavailableError(
                f"policy server unreachable: the stream from {self.url} broke or stalled "
                f"(timeout {self.timeout_s:g} s): {type(exc).__name__}: {exc}"
            ) from exc
        end = time.perf_counter()
        first = first if first is not None else end
        return PolicyOutput(
            text="".join(parts),
            generated_tokens=tokens or chunks,
            prefill_s=first - start,
            decode_s=end - first,
        )

    def _read_stream(
        self, request: urllib.request.Request, parts: list[str]
    ) -> tuple[int, int, float | None]:
        """Server-sent events of a streamed chat completion: text pieces into ``parts``;
        returns (completion tokens from usage, content chunks, time of the first piece)."""
        first: float | None = None
        tokens = 0
        chunks = 0
        with self._open(request) as response:
            for line in _bounded_lines(response):
                line = line.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                try:
                    event = json.loads(payload)
                except json.JSONDecodeError as exc:
                    raise PolicyServerError(
                        f"bad stream event from {self.url}: {payload[:200]!r}"
                    ) from exc
                if "error" in event:
                    raise PolicyServerError(f"vLLM server error: {event['error']}")
                for choice in event.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        if first is None:
                            first = time.perf_counter()
                        parts.append(piece)
                        chunks += 1
                usage = event.get("usage")
                if usage:
                    tokens = int(usage.get("completion_tokens", tokens))
        return tokens, chunks, first

    def generate(
        self,
        images: list[np.ndarray],
        instructions: list[str],
        *,
        spec: PromptSpec | None = None,
        stop: Sequence[str] = (),
    ) -> list[PolicyOutput]:
        if len(images) != len(instructions):
            raise ValueError(f"{len(images)} images for {len(instructions)} instructions")
        if len(images) <= 1:
            return [
                self._one(image, text, stop, spec)
                for image, text in zip(images, instructions, strict=True)
            ]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(images))) as pool:
            return list(pool.map(lambda i, t: self._one(i, t, stop, spec), images, instructions))


MAX_RESPONSE_BYTES = 8 << 20  # a JSON answer of the server; completions are far smaller


def _read_bounded(response: Any, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    raw = response.read(limit + 1)
    if len(raw) > limit:
        raise PolicyServerError(f"the policy server's answer exceeds {limit} bytes")
    return raw


def _bounded_lines(response: Any, limit: int = 1 << 20) -> Any:
    """The lines of a streamed response, each at most ``limit`` bytes (a bigger one is an error,
    not a memory problem)."""
    while True:
        line = response.readline(limit + 1)
        if not line:
            return
        if len(line) > limit:
            raise PolicyServerError(f"a stream event of the policy server exceeds {limit} bytes")
        yield line
