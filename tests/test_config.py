"""Config: every YAML in configs/ parses; unknown keys and bad values name the key and the file."""

import json
import math
import re
from pathlib import Path

import pytest

from looper.config import ConfigError, RunConfig, load_config, parse_overrides

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_parses(path):
    config = load_config(path)
    assert isinstance(config, RunConfig)
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("#"), "each config starts with a comment saying what it assumes"
    assert "looper " in path.read_text().split("\n\n")[0], "the header names the command that launches it"


def test_trainer_sections_are_valid_trl_configs(tmp_path):
    """The pass-through trainer dicts must be accepted by TRL's own config classes (liger-kernel, a GPU extra the 8B
    configs use, is refused up front where it is not installed: checked, then set aside)."""
    import importlib.util

    from looper.config import ConfigError
    from looper.trainers import make_trl_config

    for path in CONFIGS:
        config = load_config(path)
        if config.sft.trainer.get("use_liger_kernel") and importlib.util.find_spec("liger_kernel") is None:
            with pytest.raises(ConfigError, match="use_liger_kernel: true needs liger-kernel"):
                make_trl_config("sft", config, tmp_path)
            config.sft.trainer["use_liger_kernel"] = False
        make_trl_config("sft", config, tmp_path)
        for kind in ("dpo", "grpo", "rloo"):
            make_trl_config(kind, config, tmp_path)


@pytest.mark.parametrize("name", ["r1-distill-llama-8b", "r1-distill-llama-8b-qlora", "r1-distill-llama-8b-plan"])
def test_reasoning_model_configs_leave_room_to_think(name):
    """DeepSeek-R1 distills think for 500-2,000 tokens on GSM8K: every generation limit fits that, DPO's sequences fit a
    prompt plus such an answer, answers are read in flexible mode (\\boxed), and looper's own configs train SFT on the
    model's own reasoning (the plan's keeps its gold data, by name)."""
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    limits = [
        config.rollouts.max_new_tokens,
        config.eval.max_new_tokens,
        config.rl.grpo["max_completion_length"],
        config.rl.rloo["max_completion_length"],
    ]
    assert min(limits) >= 2048 and config.rl.dpo["max_length"] >= config.rollouts.max_new_tokens + 256
    assert config.regime_w.answer_mode == "flexible"
    assert config.model.prompt_format == ("chat" if name.endswith("plan") else "chat_user")
    assert config.sft.data == ("gold" if name.endswith("plan") else "self")
    if config.sft.data == "self":
        assert config.sft.self_data.max_new_tokens >= 2048
        assert config.sft.trainer["max_length"] >= config.sft.self_data.max_new_tokens + 256


def test_overrides_apply_with_yaml_types():
    config = load_config(CONFIGS[0], ["sft.trainer.max_steps=7", "rollouts.num_questions=null", "regime_w.w_end=0.5"])
    assert config.sft.trainer["max_steps"] == 7
    assert config.rollouts.num_questions is None
    assert config.regime_w.w_end == 0.5
    # YAML 1.1 would read 1e-4 as a string; learning rates are written that way
    assert load_config(CONFIGS[0], ["sft.trainer.learning_rate=1e-4"]).sft.trainer["learning_rate"] == 1e-4


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["sft.lora_presett=baseline"], "unknown key 'lora_presett'"),
        (["model.quantization=3bit"], "'3bit' is not one of"),
        (["rollouts.batch_size=big"], "rollouts.batch_size: expected int"),
        (["nokey"], "must look like key=value"),
    ],
)
def test_bad_overrides_are_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS[0], overrides)


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsft:\n  lora_rank: 8\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(bad) in str(err.value) and "sft: unknown key 'lora_rank'" in str(err.value)


def test_a_config_note_says_which_result_fields_the_command_line_changed():
    """A config's note describes the config as written: a run that changes what it makes says so under the note;
    names, folders and speed or logging settings do not."""
    note = load_config("configs/demo.yaml").note
    assert (
        load_config(
            "configs/demo.yaml", ["name=x", "runs_dir=/tmp", "eval.batch_size=2", "sft.trainer.logging_steps=3"]
        ).note
        == note
    )
    changed = load_config(
        "configs/demo.yaml", ["sft.trainer.max_steps=60", "data.source=local", "eval.batch_size=2"]
    ).note
    assert (
        changed == f"{note} [Written for the config as it stands; this run changes sft.trainer.max_steps, data.source.]"
    )
    assert load_config("configs/demo.yaml", ["seed=1", "note=mine"]).note == "mine"
    assert load_config(None, ["seed=1"]).note is None


def test_parse_overrides_nested():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


def test_every_field_is_classed_as_result_changing_or_not():
    """Only result-changing fields enter stage fingerprints. The fields that change no result are listed here, so
    that adding one is a visible decision; every other field (including a new one) is result-changing."""
    from looper.config import RunConfig, is_result_field

    fields = _leaf_fields_resolved(RunConfig)
    assert sorted(f for f in fields if not is_result_field(f)) == [
        "eval.batch_size",
        "eval.vllm",
        "rollouts.batch_size",
        "rollouts.vllm",
    ]
    assert {
        "rollouts.max_new_tokens",
        "rollouts.engine",
        "eval.engine",
        "eval.protocol",
        "eval.samples",
        "seed",
        "model.name_or_path",
        "sft.trainer",
        "rl.dpo",
    } <= {f for f in fields if is_result_field(f)}
    # inside the TRL sections, keys that only log, save or size memory are not result-changing; the rest are
    from looper.config import TRAINER_NOT_RESULT_KEYS

    assert sorted(TRAINER_NOT_RESULT_KEYS) == sorted(
        [
            "logging_steps",
            "logging_first_step",
            "logging_strategy",
            "logging_dir",
            "logging_nan_inf_filter",
            "report_to",
            "run_name",
            "project",
            "trackio_space_id",
            "disable_tqdm",
            "log_level",
            "log_completions",
            "num_completions_to_print",
            "save_steps",
            "save_strategy",
            "save_total_limit",
            "save_only_model",
            "dataloader_num_workers",
            "dataloader_pin_memory",
            "dataloader_persistent_workers",
            "dataloader_prefetch_factor",
            # memory only: what a user lowers after running out of memory, and resumes
            "activation_checkpointing",
            "gradient_checkpointing",
            "vllm_gpu_memory_utilization",
            "per_device_eval_batch_size",
        ]
    )
    for section in ("sft.trainer", "rl.dpo", "rl.rft", "rl.grpo", "rl.rloo"):
        for key in (
            "logging_steps",
            "report_to",
            "save_steps",
            "save_total_limit",
            "dataloader_num_workers",
            "activation_checkpointing",
            "gradient_checkpointing",
            "per_device_eval_batch_size",
        ):
            assert not is_result_field(f"{section}.{key}")
        for key in (
            "learning_rate",
            "max_steps",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "max_length",
            "beta",
            "seed",
            "activation_checkpointing_kwargs",
            "gradient_checkpointing_kwargs",
        ):
            assert is_result_field(f"{section}.{key}")
    for section in ("rl.grpo", "rl.rloo"):
        assert not is_result_field(f"{section}.vllm_gpu_memory_utilization")
        for key in ("num_generations", "generation_batch_size", "steps_per_generation", "vllm_mode", "use_vllm"):
            assert is_result_field(f"{section}.{key}")
    assert not is_result_field("rollouts.vllm.gpu_memory_utilization")


def _leaf_fields_resolved(cls, prefix: str = "") -> list[str]:
    import dataclasses
    import typing

    out = []
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            out += _leaf_fields_resolved(tp, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def test_a_changed_logging_or_batch_field_keeps_a_finished_stage_and_a_result_field_is_refused(tmp_path):
    from looper.errors import InputError
    from looper.runs import RunDir, check_stage, finish_stage

    config = load_config(CONFIGS[0], [f"runs_dir={tmp_path}", "sft.trainer.logging_steps=5", "rollouts.batch_size=64"])
    run = RunDir.of(config)
    finish_stage(run, "collect-rollouts", config)
    for same in (
        ["sft.trainer.logging_steps=1", "sft.trainer.report_to=tensorboard"],
        ["rollouts.batch_size=8"],
        ["rollouts.vllm={gpu_memory_utilization: 0.5}"],
        ["eval.batch_size=3"],
    ):
        assert check_stage(run, "collect-rollouts", load_config(CONFIGS[0], [f"runs_dir={tmp_path}", *same]))
    with pytest.raises(InputError, match=r"rollouts.max_new_tokens: \d+ -> 7.*stage's outputs to redo it"):
        check_stage(
            run, "collect-rollouts", load_config(CONFIGS[0], [f"runs_dir={tmp_path}", "rollouts.max_new_tokens=7"])
        )
    run.rollouts.parent.mkdir(parents=True)
    run.rollouts.write_text("")  # the message names what to delete, where it is
    with pytest.raises(InputError, match=rf"stage's outputs \(data/rl_rollouts.jsonl, in {run.root}\) to redo it"):
        check_stage(
            run, "collect-rollouts", load_config(CONFIGS[0], [f"runs_dir={tmp_path}", "rollouts.max_new_tokens=7"])
        )
    with pytest.raises(InputError, match=r"sft.trainer.learning_rate"):
        check_stage(
            run, "collect-rollouts", load_config(CONFIGS[0], [f"runs_dir={tmp_path}", "sft.trainer.learning_rate=0.5"])
        )

    # a marker written before the classes existed records every field: its batch size is not held against a rerun
    import json

    marker = json.loads(run.marker("collect-rollouts").read_text())
    marker["config"]["rollouts"]["batch_size"], marker["config_hash"] = 64, "older"
    run.marker("collect-rollouts").write_text(json.dumps(marker))
    assert check_stage(
        run, "collect-rollouts", load_config(CONFIGS[0], [f"runs_dir={tmp_path}", "rollouts.batch_size=8"])
    )


def test_trainer_configs_use_no_deprecated_names(tmp_path, recwarn):
    """transformers >= 5.24 renamed gradient_checkpointing to activation_checkpointing and warns on the old name,
    which TRL's configs default to True: looper passes the new name (TRL's default kept), so building every config's
    trainer settings raises no deprecation warning, and a YAML that still says gradient_checkpointing is honoured."""
    import warnings

    from looper.trainers import make_trl_config

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        for path in CONFIGS:
            config = load_config(path, ["sft.trainer.use_liger_kernel=false"])
            for kind in ("sft", "dpo", "rft", "grpo", "rloo"):
                trl_config = make_trl_config(kind, config, tmp_path)
                assert trl_config.activation_checkpointing == trl_config.gradient_checkpointing
        config = load_config("configs/demo.yaml", ["rl.grpo.gradient_checkpointing=false"])
        assert make_trl_config("grpo", config, tmp_path).activation_checkpointing is False
        assert make_trl_config("rloo", config, tmp_path).activation_checkpointing is True  # TRL's default


def test_trainer_section_help_states_looper_defaults_and_trls_own():
    """The help of every TRL section lists exactly looper's defaults for it (trainers.COMMON_DEFAULTS +
    TRAINER_DEFAULTS[kind]) as key=value, each with TRL's own default as (TRL: value) where and only where the
    installed TRL's differs; the help is written out in config.py, which trainers.py imports."""
    import dataclasses
    import re

    from looper.config import RLConfig, SFTStageConfig, _yaml_load
    from looper.trainers import COMMON_DEFAULTS, TRAINER_DEFAULTS, _trl_class

    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(RLConfig)}
    helps["sft"] = next(f.metadata["help"] for f in dataclasses.fields(SFTStageConfig) if f.name == "trainer")
    assert set(TRAINER_DEFAULTS) <= set(helps)
    for kind, own in TRAINER_DEFAULTS.items():
        defaults = {**COMMON_DEFAULTS, **own}
        trl = {
            f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(_trl_class(kind))
        }
        stated = re.findall(
            r"(\w+)=([^\s,;()]*[^\s,;().])(?: \(TRL: ([^\s,;)]+))?", helps[kind].split("Set by looper")[0]
        )
        assert sorted(key for key, _, _ in stated) == sorted(defaults), kind
        for key, value, theirs in stated:
            assert _yaml_load(value) == defaults[key], (kind, key)
            if trl[key] == defaults[key]:
                assert not theirs, (kind, key)
            else:
                assert theirs and _yaml_load(theirs) == trl[key], (kind, key, theirs, trl[key])
    for kind in ("grpo", "rloo"):  # what train-rl sets over the section
        for key in (
            "reward_weights",
            "shuffle_dataset",
            "mask_truncated_completions",
            "generation_batch_size",
            "steps_per_generation",
        ):
            assert key in helps[kind].split("Set by looper")[1], (kind, key)


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_an_online_value_train_rl_would_replace_is_refused(tmp_path, kind):
    """A GRPO / RLOO value that train-rl replaces with its own (prepare_online) is refused at the config check, not
    dropped: steps_per_generation under rl.mix_arms (looper sets generation_batch_size, TRL derives the steps from
    it), reward_weights, shuffle_dataset true, mask_truncated_completions against rl.truncation. Looper's own value,
    and steps_per_generation without rl.mix_arms, pass."""
    from looper.trainers import trl_config

    def check(*overrides: str):
        config = load_config("configs/demo.yaml", [f"runs_dir={tmp_path}", f"rl.algorithm={kind}", *overrides])
        return trl_config(kind, config, tmp_path, on_this_machine=False)

    for overrides, message in (
        (
            [f"rl.{kind}.steps_per_generation=2"],
            (
                rf"rl.{kind}.steps_per_generation: 2: with rl.mix_arms looper sets "
                rf"generation_batch_size .* set rl.{kind}.generation_batch_size"
            ),
        ),
        ([f"rl.{kind}.reward_weights=[1,1,1,1,1]"], rf"rl.{kind}.reward_weights: .*Regime W weights"),
        ([f"rl.{kind}.shuffle_dataset=true"], rf"rl.{kind}.shuffle_dataset: true: looper sets it to false"),
        ([f"rl.{kind}.mask_truncated_completions=true"], r"from rl.truncation \(now penalize\)"),
    ):
        with pytest.raises(ConfigError, match=message):
            check(*overrides)
    check(
        f"rl.{kind}.shuffle_dataset=false",
        f"rl.{kind}.mask_truncated_completions=false",
        f"rl.{kind}.generation_batch_size=64",
    )
    check("rl.truncation=mask", f"rl.{kind}.mask_truncated_completions=true")
    assert check("rl.mix_arms=false", f"rl.{kind}.steps_per_generation=2").steps_per_generation == 2


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_the_online_config_checked_is_the_one_trained_with(tmp_path, kind):
    """trl_config sets looper's GRPO / RLOO values itself (trainers.online_settings), so the entry check, looper plan
    and train-rl build one config: Regime W's part weights, no shuffling, and under rl.mix_arms a generation batch of
    num_generations x arms; a generation batch that would split a question's group is refused, naming the fields."""
    from looper.regime_w.arms import build_all_arms
    from looper.regime_w.reward import reward_part_weights
    from looper.trainers import trl_config

    def build(*overrides: str):
        config = load_config("configs/demo.yaml", [f"runs_dir={tmp_path}", f"rl.algorithm={kind}", *overrides])
        return config, trl_config(kind, config, tmp_path, on_this_machine=False)

    config, args = build(f"rl.{kind}.num_generations=4")
    arms = len(build_all_arms(config.regime_w))
    assert args.reward_weights == reward_part_weights(config.regime_w)
    assert args.shuffle_dataset is False and args.mask_truncated_completions is False
    assert args.generation_batch_size == 4 * arms  # 32: two steps of 16
    # 3 x 8 = 24 completions a question; TRL needs whole steps of 16: two questions, 48
    config, args = build(f"rl.{kind}.num_generations=3")
    assert args.generation_batch_size == math.lcm(3 * arms, args.per_device_train_batch_size) == 48
    assert build("rl.truncation=mask")[1].reward_weights[-1] == 0.0  # masked, not penalised
    with pytest.raises(ConfigError, match=rf"must be a multiple of num_generations x arms = {4 * arms}") as err:
        build(f"rl.{kind}.num_generations=4", f"rl.{kind}.generation_batch_size={4 * arms + 1}")
    assert err.value.fields == (f"rl.{kind}.generation_batch_size", f"rl.{kind}.num_generations", "rl.mix_arms")


def test_one_settings_record_and_one_message_for_every_reused_output(tmp_path):
    """Stage markers, .meta.json files, trainer work folders and adapters all keep runs.settings_record and are
    checked by runs.made_with: no record is "not made yet", the same settings pass, other settings are one error
    naming the output, each changed key (old -> new) and what to do; a record that kept only a hash says so."""
    from looper.errors import InputError
    from looper.runs import changed_settings, made_with, settings_record

    sections = {"rollouts": {"max_new_tokens": 16, "samples_per_arm": 1}, "seed": 1}
    record = settings_record(sections)
    assert changed_settings(None, sections) is None and changed_settings(record, sections) == []
    assert made_with(tmp_path / "out.jsonl", None, sections, "delete it") is False
    assert made_with(tmp_path / "out.jsonl", record, sections, "delete it") is True
    later = {"rollouts": {"max_new_tokens": 32, "samples_per_arm": 1}, "seed": 2}
    with pytest.raises(
        InputError,
        match=r"out.jsonl: made with other settings \(rollouts.max_new_tokens: 16 -> 32; "
        r"seed: 1 -> 2\); delete it",
    ):
        made_with(tmp_path / "out.jsonl", record, later, "delete it")
    assert changed_settings({"config_hash": "0123"}, later) == ["unknown keys"]
    # a key no longer classed as result-changing (here rollouts.batch_size) is not held against the output
    older = settings_record({"rollouts": {"max_new_tokens": 16, "samples_per_arm": 1, "batch_size": 8}, "seed": 1})
    assert changed_settings(older, sections) == []
    # a null field takes its default (a LoRA field: its preset's): shown as unset, not as Python's None
    # an adapter folder with no record of what made it is refused with its own reason, not "unknown keys"
    from looper.trainers import check_output_free

    (tmp_path / "lora_sft").mkdir()
    with pytest.raises(
        InputError,
        match=r"lora_sft: exists without looper_adapter.json, the record of what made it; "
        r"it is another sft run's output",
    ):
        check_output_free(tmp_path / "lora_sft", sections, "sft")
    check_output_free(tmp_path / "missing", sections, "sft")  # nothing there: free
    lora = settings_record({"sft": {"lora_preset": "baseline", "lora": {"r": None}}})
    assert changed_settings(lora, {"sft": {"lora_preset": "baseline", "lora": {"r": 4}}}) == ["sft.lora.r: unset -> 4"]


@pytest.mark.long
def test_a_stage_resumed_with_other_settings_names_them(tmp_path, tiny_model_dir):
    """The trainer's work folder and the partial rollouts keep their settings: resuming either under other
    result-changing settings is refused with the keys named; eval starts a file over and says why."""
    import json

    from conftest import run_looper

    base = [
        "configs/demo.yaml",
        f"runs_dir={tmp_path}",
        f"model.name_or_path={tiny_model_dir}",
        "data.symbolic_train_size=20",
        "data.symbolic_test_size=4",
        "sft.trainer.max_steps=2",
        "sft.lora.r=4",
        "rollouts.num_questions=2",
        "rollouts.max_new_tokens=8",
        "eval.models=[base]",
        "eval.limit=2",
        "eval.max_new_tokens=4",
    ]
    for stage in ("prepare-data", "sft"):
        run_looper(stage, *base, cwd=REPO)
    demo = tmp_path / "demo"
    work = demo / "work" / "sft"
    record = json.loads((work / "looper_settings.json").read_text())
    assert record["config"]["sft"]["lora"]["r"] == 4 and not (work / "looper_config_hash").exists()
    (demo / "stages" / "sft.json").unlink()  # as if killed before the end, with other settings now
    import shutil

    shutil.rmtree(demo / "checkpoints" / "lora_sft")
    proc = run_looper("sft", *base, "sft.lora.r=8", cwd=REPO, check=False)
    assert proc.returncode == 2 and "work/sft: made with other settings (sft.lora.r: 4 -> 8)" in proc.stderr

    run_looper("sft", *base, cwd=REPO)
    run_looper("collect-rollouts", *base, cwd=REPO)
    (demo / "stages" / "collect-rollouts.json").unlink()  # a partial collection, resumed with another limit
    proc = run_looper("collect-rollouts", *base, "rollouts.max_new_tokens=9", cwd=REPO, check=False)
    assert (
        proc.returncode == 2
        and "rl_rollouts.jsonl: made with other settings (rollouts.max_new_tokens: 8 -> 9); "
        "delete it, its shards and rl_rollouts.meta.json to start over"
        in proc.stderr
    )

    run_looper("eval", *base, cwd=REPO)
    proc = run_looper("eval", *base, "eval.max_new_tokens=5", cwd=REPO)
    assert (
        "base__gsm_symbolic_test.jsonl: made with other settings (eval.max_new_tokens: 4 -> 5); starting it over"
        in proc.stdout
    )


def test_a_trainer_work_folder_without_a_checkpoint_is_taken_over_by_other_settings(tmp_path):
    """A training run that stopped before its first checkpoint (a diverged loss, a refused value) leaves only its
    settings record: the corrected rerun starts over under the new settings. Once a checkpoint exists, resuming it
    under other settings is refused with the key named."""
    import json

    from looper.errors import InputError
    from looper.runs import settings_record
    from looper.trainers import check_work_dir, prepare_work_dir

    work, metrics = tmp_path / "work" / "sft", tmp_path / "sft.jsonl"
    work.mkdir(parents=True)
    (work / "looper_settings.json").write_text(
        json.dumps(settings_record({"sft": {"trainer": {"learning_rate": 1.0}}}))
    )
    new = {"sft": {"trainer": {"learning_rate": 1e-4}}}
    assert prepare_work_dir(work, new, "sft", metrics) is None
    assert json.loads((work / "looper_settings.json").read_text()) == settings_record(new)
    (work / "checkpoint-2").mkdir()
    (work / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    with pytest.raises(
        InputError, match=r"work/sft: made with other settings \(sft.trainer.learning_rate: 0.0001 -> 0.001\)"
    ):
        prepare_work_dir(work, {"sft": {"trainer": {"learning_rate": 1e-3}}}, "sft", metrics)
    with pytest.raises(
        InputError, match="would resume other settings"
    ):  # the stages' early check, before any model loads
        check_work_dir(work, {"sft": {"trainer": {"learning_rate": 1e-3}}}, "sft")
    check_work_dir(work, new, "sft")
    assert prepare_work_dir(work, new, "sft", metrics) == str(work / "checkpoint-2")


def test_a_config_without_a_name_runs_in_a_folder_named_for_its_file(tmp_path):
    """Two configs copied from one another and left without ``name:`` must not share (and refuse) one run folder."""
    (tmp_path / "my-run.yaml").write_text("seed: 7\n")
    (tmp_path / "named.yaml").write_text("name: kept\n")
    assert load_config(tmp_path / "my-run.yaml").name == "my-run"
    assert load_config(tmp_path / "my-run.yaml", ["name=other"]).name == "other"
    assert load_config(tmp_path / "named.yaml").name == "kept"
    assert load_config(None).name == "demo"


def test_a_key_written_twice_is_found_in_any_mapping_and_an_alias_is_walked_once(tmp_path):
    """Duplicate keys are looked for in every mapping (here an arm inside a list); a node that holds an alias of itself
    (``&x {a: *x}``, valid YAML) is walked once, not until Python's recursion limit."""
    twice = tmp_path / "twice.yaml"
    twice.write_text("regime_w:\n  arms:\n    - name: a\n      name: b\n")
    with pytest.raises(
        ConfigError, match=r"twice.yaml:4:7: not valid YAML \(duplicate key 'name' in regime_w.arms\[0\]\)"
    ):
        load_config(twice)
    looped = tmp_path / "looped.yaml"
    looped.write_text("eval:\n  vllm: &x {a: *x}\n")
    inner = load_config(looped).eval.vllm["a"]
    assert list(inner) == ["a"] and inner["a"] is inner  # the alias is kept as YAML builds it: a mapping holding itself


def test_files_written_atomically_get_the_mode_open_would_give(tmp_path):
    """Run-folder files go through a private temporary file (mkstemp: 0600); the file left behind has the mode the
    umask gives a file made with open(), as the plots and checkpoints beside it have."""
    from looper.files import atomic_write_json

    atomic_write_json(tmp_path / "a.json", {"x": 1})
    (tmp_path / "b.json").write_text("{}")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == (tmp_path / "b.json").stat().st_mode & 0o777


def test_a_damaged_manifest_or_settings_record_is_one_clear_error(tmp_path, capsys):
    """looper writes both atomically, so a broken one was edited or damaged. A settings record decides what is
    reused: an InputError naming it, not a JSONDecodeError from wherever it is read. The manifest only logs: kept
    aside with a warning, and a new one begun."""
    from looper.errors import InputError
    from looper.runs import RunDir, read_record, start_stage

    config = load_config("configs/demo.yaml", [f"runs_dir={tmp_path}"])
    run = start_stage(config, "prepare-data")
    (run.root / "manifest.json").write_text("{broken")
    start_stage(config, "sft")
    assert "manifest.json: not valid JSON" in capsys.readouterr().err
    assert (run.root / "manifest.json.damaged").read_text() == "{broken"
    assert list(json.loads((run.root / "manifest.json").read_text())["stages"]) == ["sft"]
    for text in ("{broken", "[1, 2]"):
        (tmp_path / "x.meta.json").write_text(text)
        with pytest.raises(InputError, match=r"x.meta.json: not a valid settings record .*delete it"):
            read_record(tmp_path / "x.meta.json")
    assert read_record(tmp_path / "absent.json") is None and isinstance(run, RunDir)


def test_dpo_loss_types_are_the_installed_trls():
    """looper refuses an unknown rl.dpo.loss_type at load (DPOTrainer refuses it only at its first step): its list is
    the one TRL's DPOConfig documents."""
    import dataclasses

    from trl import DPOConfig

    from looper.trainers import DPO_LOSS_TYPES

    help_text = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type").metadata["help"]
    documented = [name for name in re.findall(r"`'([a-z_]+)'`", help_text)]
    assert set(documented) == set(DPO_LOSS_TYPES)
