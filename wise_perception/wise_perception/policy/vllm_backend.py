"""vLLM policy backends (GPU machines): in-process ``vllm.LLM`` and an OpenAI-compatible server client.

* :class:`VllmPolicy` runs ``vllm.LLM`` in this process with multimodal prompts
  (``{"prompt": text, "multi_modal_data": {"image": PIL image}}``) and greedy
  ``SamplingParams``. vLLM is an optional extra (``pip install wise-perception[vllm]``, in its
  own environment: it pins torch and transformers); it is imported only here, lazily, and a
  missing install raises an ImportError that says so.
* :class:`VllmServerPolicy` talks to ``vllm serve <checkpoint>`` over HTTP with the standard
  library only: ``POST /v1/chat/completions`` with the image as a base64 PNG data URL, greedy,
  streamed (server-sent events), so the time to the first streamed token is the prefill time.
  #Tok needs the policy tokenizer: a local ``tokenizer=`` folder, else the server's
  ``POST /tokenize`` endpoint.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .base import PolicyBackend, PolicyOutput

VLLM_MISSING = (
    "the 'vllm' policy backend needs vLLM, which is not installed: install it on a GPU machine "
    "with `pip install 'wise-perception[vllm]'` (in its own environment: vLLM pins torch and "
    "transformers), or use backend 'transformers', or serve the checkpoint with `vllm serve` "
    "and pass its URL (http://host:8000) as the policy"
)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(VLLM_MISSING) from exc
    return vllm


class PolicyServerError(RuntimeError):
    """The vLLM server could not be reached or answered with an error."""


def _messages(
    instruction: str, image_part: dict[str, Any], system_prompt: str | None
) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append(
        {"role": "user", "content": [image_part, {"type": "text", "text": instruction}]}
    )
    return messages


# ---------------------------------------------------------------------- in-process


class VllmPolicy(PolicyBackend):
    """``vllm.LLM`` in this process (GPU). Prefill/decode come from vLLM's request metrics when
    it reports them (first-token time); otherwise the whole call is counted as decode."""

    def __init__(
        self,
        llm: Any,
        processor: Any,
        *,
        max_new_tokens: int = 1024,
        min_new_tokens: int = 0,
        system_prompt: str | None = None,
    ) -> None:
        self.llm = llm
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.max_new_tokens = int(max_new_tokens)
        self.min_new_tokens = int(min_new_tokens)
        self.system_prompt = system_prompt

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: Any = None,
        max_new_tokens: int = 1024,
        min_new_tokens: int = 0,
        system_prompt: str | None = None,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int = 8192,
        device: str | None = None,
        **llm_options: Any,
    ) -> VllmPolicy:
        vllm = _import_vllm()
        from transformers import AutoProcessor

        if device not in (None, "", "auto") and not str(device).startswith("cuda"):
            raise ValueError(f"the vllm backend runs on CUDA devices only, not {device!r}")
        dtype_name = "auto" if dtype in (None, "", "auto") else str(dtype).replace("torch.", "")
        llm = vllm.LLM(
            model=str(path),
            dtype=dtype_name,
            trust_remote_code=False,
            limit_mm_per_prompt={"image": 1},
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            **llm_options,
        )
        processor = AutoProcessor.from_pretrained(str(path), trust_remote_code=False)
        return cls(
            llm,
            processor,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            system_prompt=system_prompt,
        )

    def generate(
        self, images: list[np.ndarray], instructions: list[str], *, stop: Sequence[str] = ()
    ) -> list[PolicyOutput]:
        vllm = _import_vllm()
        from PIL import Image

        if len(images) != len(instructions):
            raise ValueError(f"{len(images)} images for {len(instructions)} instructions")
        prompts = []
        for image, instruction in zip(images, instructions, strict=True):
            text = self.processor.apply_chat_template(
                _messages(instruction, {"type": "image"}, self.system_prompt),
                add_generation_prompt=True,
                tokenize=False,
            )
            prompts.append({"prompt": text, "multi_modal_data": {"image": Image.fromarray(image)}})
        params = vllm.SamplingParams(
            temperature=0.0,
            max_tokens=self.max_new_tokens,
            min_tokens=self.min_new_tokens,
            stop=list(stop) or None,
            include_stop_str_in_output=True,
        )
        start = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        total = time.perf_counter() - start
        results = []
        for out in outputs:
            completion = out.outputs[0]
            prefill = _first_token_seconds(getattr(out, "metrics", None))
            prefill = min(prefill, total) if prefill is not None else 0.0
            results.append(
                PolicyOutput(
                    text=completion.text,
                    generated_tokens=len(completion.token_ids),
                    prefill_s=prefill,
                    decode_s=total - prefill,
                )
            )
        return results

    def close(self) -> None:
        import torch

        self.llm = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _first_token_seconds(metrics: Any) -> float | None:
    """Time from arrival to the first token in vLLM's RequestMetrics, when reported."""
    if metrics is None:
        return None
    first, arrival = (
        getattr(metrics, "first_token_time", None),
        getattr(metrics, "arrival_time", None),
    )
    if first is None or arrival is None:
        return None
    return max(0.0, float(first) - float(arrival))


# ---------------------------------------------------------------------- server client


class RemoteTokenizer:
    """Counts tokens with the server's ``POST /tokenize`` (vLLM's OpenAI server has it)."""

    def __init__(self, client: VllmServerPolicy) -> None:
        self.client = client

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        body = {
            "model": self.client.model,
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

    ``model`` is the served model name (default: the first one ``GET /v1/models`` lists).
    ``tokenizer`` is a local folder with the policy tokenizer for #Tok (default: the server's
    ``/tokenize``). Requests of one batch are sent concurrently (the server batches them).
    """

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        max_new_tokens: int = 1024,
        min_new_tokens: int = 0,
        timeout_s: float = 120.0,
        tokenizer: str | Path | Any | None = None,
        api_key: str | None = None,
        system_prompt: str | None = None,
        stream: bool = True,
        max_concurrency: int = 8,
        device: str | None = None,
        dtype: Any = None,
    ) -> None:
        del device, dtype  # chosen by the server
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"server URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/").removesuffix("/v1")
        self.timeout_s = float(timeout_s)
        self.max_new_tokens = int(max_new_tokens)
        self.min_new_tokens = int(min_new_tokens)
        self.api_key = api_key
        self.system_prompt = system_prompt
        self.stream = stream
        self.max_concurrency = max(1, int(max_concurrency))
        self.model = model or self._first_model()
        if tokenizer is None:
            self.tokenizer: Any = RemoteTokenizer(self)
        elif isinstance(tokenizer, str | Path):
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), trust_remote_code=False)
        else:
            self.tokenizer = tokenizer

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
        try:
            return urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            detail = exc.read(2000).decode("utf-8", "replace")
            raise PolicyServerError(
                f"vLLM server {request.full_url} answered HTTP {exc.code}: {detail.strip() or exc.reason}"
            ) from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PolicyServerError(
                f"vLLM server {request.full_url} unreachable or timed out after {self.timeout_s:g} s: {reason}"
            ) from exc

    def _post_json(self, path: str, body: dict[str, Any] | None = None) -> Any:
        with self._open(self._request(path, body)) as response:
            raw = response.read()
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
        self, image: np.ndarray, instruction: str, stop: Sequence[str] = ()
    ) -> dict[str, Any]:
        image_part = {"type": "image_url", "image_url": {"url": self.image_data_url(image)}}
        body: dict[str, Any] = {
            "model": self.model,
            "messages": _messages(instruction, image_part, self.system_prompt),
            "max_tokens": self.max_new_tokens,
            "temperature": 0.0,
            "stream": self.stream,
        }
        if self.min_new_tokens:
            body["min_tokens"] = self.min_new_tokens  # vLLM's extra sampling parameter
        if stop:
            body["stop"] = list(stop)
            body["include_stop_str_in_output"] = True  # vLLM's extra sampling parameter
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def _one(self, image: np.ndarray, instruction: str, stop: Sequence[str] = ()) -> PolicyOutput:
        request = self._request("/v1/chat/completions", self._body(image, instruction, stop))
        start = time.perf_counter()
        if not self.stream:
            with self._open(request) as response:
                raw = response.read()
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
        except (TimeoutError, ConnectionError) as exc:
            raise PolicyServerError(
                f"vLLM server {self.url} stream broke or timed out after {self.timeout_s:g} s: {exc}"
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
            for line in response:
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
        self, images: list[np.ndarray], instructions: list[str], *, stop: Sequence[str] = ()
    ) -> list[PolicyOutput]:
        if len(images) != len(instructions):
            raise ValueError(f"{len(images)} images for {len(instructions)} instructions")
        if len(images) <= 1:
            return [
                self._one(image, text, stop)
                for image, text in zip(images, instructions, strict=True)
            ]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(images))) as pool:
            return list(pool.map(lambda i, t: self._one(i, t, stop), images, instructions))
