"""The ``trainer`` section of a training config: ``trl.GRPOConfig`` options, read by TRL's parser.

The section's keys are GRPOConfig's own field names, so every TRL option can be set from a
YAML file or as ``trainer.key=value``. Values are converted and checked by the argument parser
TRL's scripts use (``transformers.HfArgumentParser`` over ``GRPOConfig``): each becomes
``--key=value``, so ``2e-6`` (a string to YAML 1.1) is a float and ``fast`` is refused with the
parser's message and the option's TRL help. Values a command line cannot carry (null,
mappings, lists of a single-valued option) are handed to GRPOConfig as they are, once the key
is known. GRPOConfig's own ``__post_init__`` checks the whole when it is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, NoReturn

USAGE = "trainer.KEY=VALUE, or KEY: VALUE under trainer: in a config (any option below, no --)"


class TrainerArgumentError(ValueError):
    """A trainer key is not a GRPOConfig option, or its value has the wrong type."""


@cache
def trainer_parser() -> Any:
    """``HfArgumentParser(GRPOConfig)`` that raises instead of exiting, with no abbreviations
    (``learning=...`` must not silently set ``learning_rate``)."""
    from transformers import HfArgumentParser
    from trl import GRPOConfig

    class Parser(HfArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise TrainerArgumentError(message)

    return Parser(GRPOConfig, usage=USAGE, allow_abbrev=False)


@cache
def _fields() -> dict[str, dataclasses.Field]:
    from trl import GRPOConfig

    return {f.name: f for f in dataclasses.fields(GRPOConfig) if f.init}


@cache
def _nullable() -> frozenset[str]:
    """Options whose declared type admits None."""
    from trl import GRPOConfig

    hints = typing.get_type_hints(GRPOConfig)
    return frozenset(name for name in _fields() if type(None) in typing.get_args(hints[name]))


def option_help(key: str) -> str:
    """TRL's help text of one GRPOConfig option."""
    return " ".join(str(_fields()[key].metadata.get("help", "")).split())


def trainer_help() -> str:
    """TRL's help for every GRPOConfig option (``python -m wise_training.train --trainer-help``)."""
    return trainer_parser().format_help()


def _unknown_key(key: str) -> str:
    import trl

    close = difflib.get_close_matches(key, list(_fields()), n=3, cutoff=0.6)
    hint = "".join(f"\n  did you mean trainer.{name}: {option_help(name)}" for name in close)
    return (
        f"trainer.{key} is not a trl.GRPOConfig option (TRL {trl.__version__}); "
        f"python -m wise_training.train --trainer-help lists them all{hint}"
    )


def _bad_value(message: str) -> str:
    """The parser's message, plus the TRL help of the option it names."""
    match = re.search(r"argument --([\w-]+)", message)
    name = match.group(1).replace("-", "_") if match else ""
    if name in _fields():
        return f"trainer.{name}: {message}\n  {name}: {option_help(name)}"
    return message


def _command_line(values: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """(``--key=value`` arguments, values handed over as they are)."""
    parser = trainer_parser()
    argv: list[str] = []
    as_is: dict[str, Any] = {}
    for key, value in values.items():
        action = parser._option_string_actions[f"--{key}"]  # argparse has no public lookup
        if value is None and key not in _nullable():
            raise TrainerArgumentError(f"trainer.{key} cannot be null\n  {key}: {option_help(key)}")
        if isinstance(value, bool):
            argv.append(f"--{key}={str(value).lower()}")
        elif isinstance(value, int | float | str):
            argv.append(f"--{key}={value}")
        elif isinstance(value, list) and value and action.nargs == "+":
            argv += [f"--{key}", *(str(v) for v in value)]
        else:
            as_is[key] = value
    return argv, as_is


def parse_trainer(values: Mapping[str, Any]) -> dict[str, Any]:
    """The section's values converted to GRPOConfig's types; only the keys given."""
    for key in values:
        if key not in _fields():
            raise TrainerArgumentError(_unknown_key(key))
    argv, as_is = _command_line(values)
    try:
        namespace = trainer_parser().parse_args(argv)
    except TrainerArgumentError as exc:
        raise TrainerArgumentError(_bad_value(str(exc))) from None
    return {key: as_is[key] if key in as_is else getattr(namespace, key) for key in values}


def grpo_config(values: Mapping[str, Any]) -> Any:
    """``trl.GRPOConfig`` of the section (TRL's defaults for every key not given)."""
    (config,) = trainer_parser().parse_dict(parse_trainer(values), allow_extra_keys=False)
    return config
