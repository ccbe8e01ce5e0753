"""Named training configs: every paper row loads, maps to the intended switches, and fails clearly."""

import pytest

from wise_training.config import ConfigError, load_config, named_configs

PAPER_ROWS = {
    "wise",
    "seg_zero",
    "l1_exact",
    "l1_max",
    "no_distill",
    "wise_no_similarity",
    "wise_no_conciseness",
    "wise_no_indicator",
    "order_d_think_think_answer",
    "order_think_d_think_answer",
    "order_d_think_answer_think",
    "tiny_cpu",
}


def test_every_paper_row_has_a_config_that_validates():
    assert set(named_configs()) >= PAPER_ROWS
    for name in named_configs():
        config = load_config(name)
        config.reward_config()  # span order agrees with the prompt mode
        assert config.name == name


def test_recipe_defaults_follow_the_paper_and_release():
    t = load_config("wise").trainer
    assert (t["learning_rate"], t["weight_decay"], t["beta"], t["epsilon"], t["temperature"]) == (
        1e-6,
        0.01,
        5e-3,
        0.2,
        1.0,
    )
    assert (
        t["num_generations"],
        t["max_completion_length"],
        t["max_grad_norm"],
        t["entropy_coef"],
    ) == (8, 1300, 1.0, 1e-3)
    # 2 per device x 8 GPUs x 8 accumulation = 128 completions = 16 prompts x 8 rollouts
    assert (
        t["per_device_train_batch_size"] * 8 * t["gradient_accumulation_steps"]
        == 16 * t["num_generations"]
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "wise",
            {
                "order": ("think", "answer", "d_think"),
                "distill": True,
                "iou_mode": "continuous",
                "use_indicator": True,
            },
        ),
        ("seg_zero", {"order": ("think", "answer"), "distill": False, "iou_mode": "binary"}),
        ("l1_exact", {"length_reward": "l1_exact", "length_target": 57, "distill": False}),
        ("l1_max", {"length_reward": "l1_max", "length_target": 20, "l1_max_delta": 0.5}),
        (
            "wise_no_similarity",
            {"use_similarity": False, "use_conciseness": True, "use_indicator": True},
        ),
        ("wise_no_conciseness", {"use_similarity": True, "use_conciseness": False}),
        ("wise_no_indicator", {"use_indicator": False, "distill": True}),
        ("no_distill", {"distill": False, "order": ("think", "answer", "d_think")}),
        ("order_d_think_think_answer", {"order": ("d_think", "think", "answer"), "distill": True}),
        ("order_think_d_think_answer", {"order": ("think", "d_think", "answer")}),
        ("order_d_think_answer_think", {"order": ("d_think", "answer", "think")}),
    ],
)
def test_named_configs_map_to_the_intended_rewards(name, expected):
    reward = load_config(name).reward_config()
    for key, value in expected.items():
        assert getattr(reward, key) == value, key


def test_overrides_and_grpo_arguments():
    config = load_config(
        "tiny_cpu", ["trainer.learning_rate=2e-6", "reward.indicator=task_full", "data.limit=3"]
    )
    assert config.trainer["learning_rate"] == 2e-6 and config.data.limit == 3
    assert config.reward_config().indicator == "task_full"
    args = config.grpo_config()
    assert args.learning_rate == 2e-6 and args.use_cpu and not args.bf16 and args.beta == 5e-3
    assert args.entropy_coef == 1e-3 and args.num_generations == 4
    # One weight per TRL reward function, from the reward section: terms 1, monitors 0.
    assert args.reward_weights == [1.0] * 6 + [0.0] * 3
    no_distill = load_config("tiny_cpu", ["reward.distill=false"]).grpo_config()
    assert no_distill.reward_weights == [1.0] * 5 + [0.0] * 3


def test_any_grpo_config_option_can_be_set_from_the_command_line(capsys):
    """Options the hand-written mirror of GRPOConfig lacked reach TRL, typed by TRL's parser
    (a YAML 1.1 ``2e-6`` is a string; the parser makes it a float)."""
    import yaml

    from wise_training.train import main

    overrides = [
        "trainer.top_p=0.9",
        "trainer.lr_scheduler_type=cosine",
        "trainer.warmup_steps=5e-2",
        "trainer.gradient_checkpointing_kwargs={use_reentrant: false}",
        "trainer.save_total_limit=null",
    ]
    assert main(["--config", "tiny_cpu", *overrides, "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert printed["top_p"] == 0.9 and printed["warmup_steps"] == 0.05
    assert printed["lr_scheduler_type"] == "cosine" and printed["save_total_limit"] is None
    args = load_config("tiny_cpu", overrides).grpo_config()
    assert args.top_p == 0.9 and args.warmup_steps == 0.05 and args.save_total_limit is None
    assert args.lr_scheduler_type.value == "cosine"
    assert args.gradient_checkpointing_kwargs == {"use_reentrant": False}


def test_an_unknown_or_ill_typed_trainer_key_fails_with_trls_help(capsys):
    from wise_training.train import main

    with pytest.raises(ConfigError) as info:
        load_config("wise", ["trainer.learnig_rate=2e-6"])
    message = str(info.value)
    assert "trainer.learnig_rate is not a trl.GRPOConfig option" in message
    assert "did you mean trainer.learning_rate: The initial learning rate for AdamW." in message
    with pytest.raises(ConfigError) as info:
        load_config("wise", ["trainer.max_steps=many"])
    message = str(info.value)
    assert "trainer.max_steps" in message and "invalid int value: 'many'" in message
    assert "Overrides `num_train_epochs`" in message  # TRL's help of the option
    with pytest.raises(ConfigError, match="reward section"):
        load_config("wise", ["trainer.reward_weights=[1, 1]"])
    # The command line: exit 2 and the same message; --trainer-help prints TRL's option list.
    assert main(["--config", "wise", "trainer.learnig_rate=2e-6"]) == 2
    assert "did you mean trainer.learning_rate" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--trainer-help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--num_generations" in out and "--vllm_mode" in out and "--beta" in out


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.bogus=1"], "trainer.bogus is not a trl.GRPOConfig option"),
        (["surprise.x=1"], "unknown top-level keys"),
        (["prompt.mode=telepathy"], "prompt.mode"),
        (["reward.iou_mode=soft"], "iou_mode"),
        (["reward.order=[think, answer]"], "d_think"),
        (["trainer.learning_rate"], "section.key=value"),
        (["trainer.learning_rate=fast"], "trainer.learning_rate: .*invalid float value"),
        (["data.limit=many"], "must be a number"),
    ],
)
def test_bad_configs_fail_with_the_key_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("wise", overrides)


def test_reward_order_must_match_the_prompt(tmp_path):
    with pytest.raises(ConfigError, match="contradicts"):
        load_config("wise", ["reward.order=[d_think, think, answer]"]).reward_config()


def test_base_chain_and_missing_files(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="deeper"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("trainer: [1, 2]\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "bad.yaml")


def test_an_unknown_config_name_lists_the_valid_names():
    with pytest.raises(ConfigError) as info:
        load_config("wise_typo")
    message = str(info.value)
    assert "unknown config 'wise_typo'" in message
    assert all(name in message for name in PAPER_ROWS)
    with pytest.raises(ConfigError, match=r"named configs: .*seg_zero"):
        load_config("/nowhere/mine.yaml")


def test_train_cli_lists_the_configs_for_an_unknown_name(capsys):
    from wise_training.train import main

    assert main(["--config", "wsie"]) == 2
    err = capsys.readouterr().err
    assert "unknown config 'wsie'" in err and "wise_no_indicator" in err and "tiny_cpu" in err
