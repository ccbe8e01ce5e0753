"""Every command's --help is plain text: what a user reads in a terminal, not reST markup."""

from __future__ import annotations

import importlib

import pytest

COMMANDS = (
    "wise_perception.cli",
    "wise_training.train",
    "wise_training.evaluate",
    "wise_training.export",
    "wise_training.data",
    "wise_training.report",
    "wise_dev.bench",
    "wise_dev.bench_node",
    "wise_dev.train_smoke",
    "wise_dev.qwen_tokenizer",
    "wise_dev.tiny_models",
    "wise_dev.teach",
    "wise_dev.reproduce.run",
    "wise_dev.reproduce.demo",
    "wise_dev.reproduce.pack",
    "wise_dev.reproduce.probe",
)


@pytest.mark.parametrize("module", COMMANDS)
def test_help_is_plain_text_and_exits_0(module, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage:"), text[:200]
    assert "``" not in text and ":mod:" not in text and ":class:" not in text, text
