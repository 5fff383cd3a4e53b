"""Bad input, typed as a user would type it: each case through the real CLI must exit non-zero with one
line ``looper: error: ...`` naming the file, line, field or missing input, print no traceback, and
leave the run folder exactly as it was (no file added, changed or removed)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from conftest import run_looper

pytestmark = pytest.mark.long  # part of CI's full run, not of the README's quick test command

REPO = Path(__file__).resolve().parents[1]
GOOD_ROWS = [
    {"question": f"Tom has {i} apples and buys 2 more. How many?", "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"}
    for i in range(10)
]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a hash of its bytes."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write_jsonl(path: Path, rows: list, extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + extra)
    return path


def write_parquet(path: Path, rows: list) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@dataclass
class Case:
    argv: list[str]  # after `looper`; {cfg} is the demo config, {src} a scratch folder
    expect: str  # a part of the one error line
    needs: str = "nothing"  # the run folder state the case starts from: nothing, data, sft, rollouts, preferences, rl
    setup: Callable[[Path], None] = field(default=lambda src: None)  # writes bad files under src


def _yaml(text: str) -> Callable[[Path], None]:
    return lambda src: (src.mkdir(parents=True, exist_ok=True), (src / "run.yaml").write_text(text))


def _rollouts(src: Path, trajectories: str) -> None:
    src.mkdir(parents=True, exist_ok=True)
    (src / "r.jsonl").write_text(f'{{"id": "q1", "gold": "4", "trajectories": {trajectories}}}\n')


def _local(train: Callable[[Path], object]) -> Callable[[Path], None]:
    def make(src: Path) -> None:
        train(src / "data")
        if not (src / "data" / "test.jsonl").exists():
            write_jsonl(src / "data" / "test.jsonl", GOOD_ROWS[:2])

    return make


LOCAL = ["data.source=local", "data.path={src}/data"]
CASES = {
    # --- the config file and overrides
    "yaml-malformed": Case(["sft", "{src}/run.yaml"], "run.yaml:2:", setup=_yaml("name: [x\n  y: 2\n")),
    "yaml-duplicate-key": Case(
        ["sft", "{src}/run.yaml"],
        "run.yaml:4:5: not valid YAML (duplicate key 'learning_rate' in sft.trainer)",
        setup=_yaml("sft:\n  trainer:\n    learning_rate: 1e-4\n    learning_rate: 2e-4\n"),
    ),  # PyYAML keeps the last
    "yaml-unclosed": Case(
        ["sft", "{src}/run.yaml"],
        "run.yaml:2:9: not valid YAML (a '{' mapping opened here is never closed)",
        setup=_yaml("sft:\n  lora: {r: 8\n"),
    ),  # where it opened, not the line past the end
    "yaml-unclosed-then-more": Case(
        ["sft", "{src}/run.yaml"],
        "run.yaml:3:9: not valid YAML (expected ',' or '}', but got ':', inside a '{' mapping opened at 2:9)",
        setup=_yaml("sft:\n  lora: {r: 8\n  method: lora\n"),
    ),
    "yaml-empty": Case(
        ["sft", "{src}/run.yaml"], "run.yaml: no settings in it", setup=_yaml("# nothing but a comment\n")
    ),
    "config-not-a-file": Case(["sft", "/dev/null"], "/dev/null: not a regular file"),
    "yaml-not-a-mapping": Case(["sft", "{src}/run.yaml"], "the top level must be a mapping", setup=_yaml("- a\n- b\n")),
    "yaml-binary": Case(
        ["sft", "{src}/run.yaml"],
        "not a text file",
        setup=lambda src: (src.mkdir(parents=True), (src / "run.yaml").write_bytes(b"\xff\xfe\x00\x81")),
    ),
    "config-missing": Case(["sft", "{src}/nope.yaml"], "config file not found"),
    "section-given-a-value": Case(["sft", "{cfg}", "sft=3"], "command line: sft: expected a mapping, got 3"),
    "seed-out-of-range": Case(["sft", "{cfg}", "seed=-1"], "command line: seed: must be >= 0, got -1"),
    "override-key-with-space": Case(
        ["sft", "{cfg}", "sft.trainer. max_steps=3"], "is not a key like section.key (no empty parts, no spaces)"
    ),
    "unknown-top-level-key": Case(["sft", "{cfg}", "sede=3"], "command line: unknown key 'sede' (did you mean 'seed'?"),
    "unknown-key-in-file": Case(
        ["sft", "{src}/run.yaml"], "sft.lora: unknown key 'rank'", setup=_yaml("sft:\n  lora:\n    rank: 8\n")
    ),
    "unknown-nested-key": Case(
        ["sft", "{cfg}", "rollouts.batch=4"], "rollouts: unknown key 'batch' (did you mean 'batch_size'?"
    ),
    "unknown-sft-trainer-key": Case(
        ["sft", "{cfg}", "sft.trainer.max_stepz=3"], "demo.yaml with sft.trainer.max_stepz=3: sft.trainer", needs="data"
    ),
    "unknown-sft-trainer-key-self-data": Case(
        ["sft", "{cfg}", "sft.data=self", "sft.trainer.max_stepz=3"],
        "demo.yaml with sft.trainer.max_stepz=3: sft.trainer",
        needs="data",
    ),  # refused before the base model samples (folder untouched)
    "sft-trainer-wrong-type": Case(
        ["sft", "{cfg}", "sft.trainer.max_steps=abc"],
        "demo.yaml with sft.trainer.max_steps=abc: sft.trainer.max_steps: expected int, got 'abc'",
        needs="data",
    ),  # transformers would take it and fail after the model loads
    "grpo-trainer-wrong-type": Case(
        ["train-rl", "{cfg}", "rl.algorithm=grpo", "rl.grpo.learning_rate=fast"],
        "demo.yaml with rl.grpo.learning_rate=fast: rl.grpo.learning_rate",
        needs="sft",
    ),
    "sft-negative-learning-rate": Case(
        ["sft", "{cfg}", "sft.trainer.learning_rate=-1"],
        "demo.yaml with sft.trainer.learning_rate=-1: sft.trainer.learning_rate: -1; must be a finite number >= 0",
        needs="data",
    ),
    "sft-batch-size-zero": Case(
        ["sft", "{cfg}", "sft.trainer.per_device_train_batch_size=0"],
        "demo.yaml with sft.trainer.per_device_train_batch_size=0: sft.trainer.per_device_train_batch_size: 0; must be >= 1",
        needs="data",
    ),
    "dpo-negative-learning-rate": Case(
        ["train-rl", "{cfg}", "rl.dpo.learning_rate=-1"],
        "demo.yaml with rl.dpo.learning_rate=-1: rl.dpo.learning_rate: -1; must be a finite number >= 0",
        needs="preferences",
    ),
    "plan-negative-max-steps": Case(
        ["plan", "{cfg}", "sft.trainer.max_steps=-5"], "sft.trainer.max_steps: -5; must be -1"
    ),
    # values nothing downstream refuses in time: a length that cuts every example away, a rate that diverges
    "sft-max-length-zero": Case(
        ["sft", "{cfg}", "sft.trainer.max_length=0"],
        "demo.yaml with sft.trainer.max_length=0: sft.trainer.max_length: 0; must be >= 1 tokens, or null",
        needs="data",
    ),
    "sft-max-length-cuts-every-example": Case(
        ["sft", "{cfg}", "sft.trainer.max_length=8"],
        "sft.trainer.max_length=8: every example's prompt alone is at least that long",
        needs="data",
    ),
    "dpo-unknown-loss-type": Case(
        ["plan", "{cfg}", "rl.dpo.loss_type=[sigmoid, nope]"],
        "rl.dpo.loss_type: 'nope' is not a DPO loss of TRL's; known: sigmoid, hinge",
    ),
    "plan-negative-max-length": Case(
        ["plan", "{cfg}", "sft.trainer.max_length=-3"], "sft.trainer.max_length: -3; must be >= 1"
    ),
    "prepare-data-dpo-max-length-zero": Case(
        ["prepare-data", "{cfg}", "rl.dpo.max_length=0"], "demo.yaml with rl.dpo.max_length=0: rl.dpo.max_length: 0"
    ),
    "grpo-max-completion-length-zero": Case(
        ["plan", "{cfg}", "rl.algorithm=grpo", "rl.grpo.max_completion_length=0"],
        "rl.grpo.max_completion_length: 0; must be >= 1 tokens",
    ),
    # train-rl sets generation_batch_size under rl.mix_arms, and TRL refuses both: the user's value is not dropped silently
    "grpo-steps-per-generation": Case(
        ["train-rl", "{cfg}", "rl.algorithm=grpo", "rl.grpo.steps_per_generation=2"],
        "demo.yaml with rl.grpo.steps_per_generation=2: rl.grpo.steps_per_generation: 2: with "
        "rl.mix_arms looper sets generation_batch_size",
        needs="sft",
    ),
    # a ranking build-preferences refuses stops the pipeline at load, not after SFT and the rollouts
    "pipeline-two-rankings": Case(
        ["pipeline", "{cfg}", "preferences.random_rewards=true", "preferences.label_free=true"],
        "command line: preferences.label_free and preferences.random_rewards are two rankings",
    ),
    "plan-zero-epochs": Case(
        ["plan", "{cfg}", "sft.trainer.max_steps=-1", "sft.trainer.num_train_epochs=0"],
        "sft.trainer.num_train_epochs: 0 with max_steps -1 trains nothing",
    ),
    "sft-infinite-learning-rate": Case(
        ["sft", "{cfg}", "sft.trainer.learning_rate=.inf"],
        "demo.yaml with sft.trainer.learning_rate=.inf: sft.trainer.learning_rate: inf; must be a finite number >= 0",
        needs="data",
    ),
    "data-path-without-local-source": Case(
        ["prepare-data", "{cfg}", "data.path={src}"], "command line: data.path is read only with data.source=local"
    ),
    "eval-model-twice": Case(
        ["eval", "{cfg}", "eval.models=[base,base]"],
        "demo.yaml with eval.models=[base,base]: eval.models: 'base' is named twice",
        needs="data",
    ),
    "eval-no-model-made-yet": Case(
        ["eval", "{cfg}", "eval.models=[sft]"], "eval.models=['sft']: nothing to evaluate yet: sft", needs="data"
    ),  # refused before the run folder's config and manifest are rewritten
    "eval-models-empty": Case(
        ["eval", "{cfg}", "eval.models=[]"], "demo.yaml with eval.models=[]: eval.models: empty", needs="data"
    ),
    "pipeline-eval-models-empty": Case(
        ["pipeline", "{cfg}", "eval.models=[]"], "demo.yaml with eval.models=[]: eval.models: empty"
    ),  # before prepare-data
    "unknown-dpo-trainer-key": Case(
        ["train-rl", "{cfg}", "rl.dpo.betta=0.2"], "demo.yaml with rl.dpo.betta=0.2: rl.dpo", needs="preferences"
    ),
    "negative-dpo-beta": Case(
        ["train-rl", "{cfg}", "rl.dpo.beta=-1"], "demo.yaml with rl.dpo.beta=-1: rl.dpo.beta", needs="preferences"
    ),
    # a finished stage's folder: the bad value is named as such, not taken for settings other than the finished ones
    "sft-trainer-wrong-type-after-sft": Case(
        ["sft", "{cfg}", "sft.trainer.max_steps=abc"], "sft.trainer.max_steps: expected int, got 'abc'", needs="sft"
    ),
    "negative-dpo-beta-after-train-rl": Case(
        ["train-rl", "{cfg}", "rl.dpo.beta=-1"], "rl.dpo.beta: -1; DPO's beta must be", needs="rl"
    ),
    "unknown-grpo-trainer-key": Case(
        ["train-rl", "{cfg}", "rl.algorithm=grpo", "rl.grpo.num_generation=2"],
        "demo.yaml with rl.grpo.num_generation=2: rl.grpo",
        needs="sft",
    ),
    "liger-not-installed": Case(
        ["sft", "{cfg}", "sft.trainer.use_liger_kernel=true"],
        "sft.trainer.use_liger_kernel: true needs liger-kernel",
        needs="data",
    ),
    "wrong-type-int": Case(["sft", "{cfg}", "rollouts.batch_size=big"], "rollouts.batch_size: expected int"),
    "wrong-type-bool": Case(["sft", "{cfg}", "preferences.require_correct_chosen=maybe"], "expected true/false"),
    "not-one-of": Case(["sft", "{cfg}", "model.quantization=3bit"], "'3bit' is not one of"),
    # on this CPU: refused before any stage runs (pipeline) or before sft's length check and sampling
    "quantized-base-pipeline": Case(
        ["pipeline", "{cfg}", "model.quantization=4bit"], "model.quantization=4bit needs a CUDA GPU"
    ),
    "quantized-base-sft": Case(
        ["sft", "{cfg}", "model.quantization=8bit"], "model.quantization=8bit needs a CUDA GPU", needs="data"
    ),
    "zero-batch-size": Case(
        ["collect-rollouts", "{cfg}", "rollouts.batch_size=0"], "rollouts.batch_size: must be >= 1, got 0"
    ),
    "negative-limit": Case(["eval", "{cfg}", "eval.limit=-5"], "eval.limit: must be >= 1, got -5"),
    "dev-fraction-out-of-range": Case(
        ["prepare-data", "{cfg}", "data.dev_fraction=1.5"], "data.dev_fraction: must be < 1"
    ),
    "override-without-equals": Case(["sft", "{cfg}", "sft.trainer.max_steps"], "must look like key=value"),
    "override-empty-key": Case(["sft", "{cfg}", "=3"], "is not a key like section.key"),
    "override-bad-yaml-value": Case(["eval", "{cfg}", "eval.datasets=[a,"], "the value is not valid YAML"),
    "override-under-a-value": Case(["sft", "{cfg}", "seed.value=3"], "seed: expected int"),
    # --- data files
    "data-folder-missing": Case(
        ["prepare-data", "{cfg}", "data.source=local", "data.path={src}/nowhere"], "nowhere: file not found"
    ),
    "data-one-file-without-test-path": Case(
        ["prepare-data", "{cfg}", "data.source=local", "data.path={src}/data/train.jsonl"],
        "train.jsonl is a file, read as the train split; give the test split as data.test_path",
        setup=_local(lambda d: write_jsonl(d / "train.jsonl", GOOD_ROWS)),
    ),
    "data-no-test-file": Case(
        ["prepare-data", "{cfg}", *LOCAL],
        "no test.jsonl or test.parquet",
        setup=lambda src: write_jsonl(src / "data" / "train.jsonl", GOOD_ROWS),
    ),
    "jsonl-empty": Case(
        ["prepare-data", "{cfg}", *LOCAL],
        "train.jsonl: holds no rows (the train split)",
        setup=_local(lambda d: write_jsonl(d / "train.jsonl", [])),
    ),
    "jsonl-binary": Case(
        ["prepare-data", "{cfg}", *LOCAL],
        "train.jsonl:1: not UTF-8 text",
        setup=_local(
            lambda d: (
                d.mkdir(parents=True),
                (d / "train.jsonl").write_bytes(b"\xff\xd8\xff\xe0JFIF" + bytes(range(256))),
            )
        ),
    ),
    "jsonl-invalid-line": Case(
        ["prepare-data", "{cfg}", *LOCAL],
        "train.jsonl:11: not valid JSON",
        setup=_local(lambda d: write_jsonl(d / "train.jsonl", GOOD_ROWS, '{"question": "q", "answer\n')),
    ),
    "jsonl-not-an-object": Case(
        ["prepare-data", "{cfg}", *LOCAL],
        "train.jsonl:11: expected a JSON object, got array",
        setup=_local(lambda d: write_jsonl(d / "train.jsonl", [*GOOD_ROWS, [1, 2]])),
    ),
    "jsonl-missing-field": Case(
        ["prepare-data", "{cfg}", *LOCAL],
        "train.jsonl:11: missing field 'answer'",
        setup=_local(lambda d: write_jsonl(d / "train.jsonl", [*GOOD_ROWS, {"question": "q"}])),
    ),
    "jsonl-non-numeric-answer": Case(
        ["prepare-data", "{cfg}", *LOCAL],
        "train.jsonl:11: field 'answer' has no parseable",
        setup=_local(
            lambda d: write_jsonl(d / "train.jsonl", [*GOOD_ROWS, {"question": "q", "answer": "so\n#### twelve"}])
        ),
    ),
    "parquet-invalid": Case(
        ["prepare-data", "{cfg}", *LOCAL],
        "train.parquet: not a readable parquet file",
        setup=_local(lambda d: (d.mkdir(parents=True), (d / "train.parquet").write_text("not parquet at all"))),
    ),
    "parquet-missing-field": Case(
        ["prepare-data", "{cfg}", *LOCAL],
        "train.parquet:row 1: missing field 'answer'",
        setup=_local(lambda d: write_parquet(d / "train.parquet", [{"question": "q"}])),
    ),
    "rollouts-invalid-line": Case(
        ["build-preferences", "{cfg}"], "rl_rollouts.jsonl:2: not valid JSON", needs="rollouts", setup=lambda src: None
    ),
    # --- models
    "gguf-corrupt": Case(
        ["sft", "{cfg}", "model.name_or_path={src}/broken.gguf"],
        "broken.gguf: not a readable GGUF checkpoint",
        needs="data",
        setup=lambda src: (src.mkdir(parents=True), (src / "broken.gguf").write_bytes(b"GGUF" + bytes(64))),
    ),
    "hub-model-offline": Case(
        ["sft", "{cfg}", "model.name_or_path=some-org/some-model"], "cannot be reached", needs="data"
    ),
    "hub-data-offline": Case(
        ["prepare-data", "{cfg}", "data.source=hub"], "dataset openai/gsm8k comes from the Hugging Face Hub"
    ),
    "model-path-missing": Case(
        ["sft", "{cfg}", "model.name_or_path=/no/such/model"], "/no/such/model does not exist", needs="data"
    ),
    "lora-targets-missing": Case(
        ["sft", "{cfg}", "sft.lora.target_modules=[wq,wk]"],
        "demo.yaml with sft.lora.target_modules=[wq,wk]: sft.lora.target_modules:",
        needs="data",
    ),
    # --- stages run before their inputs exist
    "sft-before-prepare-data": Case(["sft", "{cfg}"], "run `looper prepare-data` first"),
    "rollouts-before-sft": Case(["collect-rollouts", "{cfg}"], "lora_sft: not a PEFT adapter folder", needs="data"),
    "preferences-before-rollouts": Case(
        ["build-preferences", "{cfg}"], "run `looper collect-rollouts` first", needs="sft"
    ),
    "dpo-before-preferences": Case(["train-rl", "{cfg}"], "run `looper build-preferences` first", needs="sft"),
    "eval-before-prepare-data": Case(["eval", "{cfg}"], "run `looper prepare-data` first"),
    "engine-removed": Case(["eval", "{cfg}", "eval.engine=slots"], "'slots' is not one of", needs="data"),
    "engine-vllm-not-installed": Case(
        ["collect-rollouts", "{cfg}", "rollouts.engine=vllm"], "rollouts.engine=vllm needs vLLM", needs="sft"
    ),
    "pipeline-negative-dpo-beta": Case(
        ["pipeline", "{cfg}", "rl.dpo.beta=-1"], "demo.yaml with rl.dpo.beta=-1: rl.dpo.beta: -1"
    ),  # before prepare-data runs
    # a stage that does not train still refuses a bad trainer value: the run folder it writes records the whole config
    "prepare-data-later-trainer-typo": Case(
        ["prepare-data", "{cfg}", "sft.trainer.learning_rat=1e-4"],
        "demo.yaml with sft.trainer.learning_rat=1e-4: sft.trainer",
    ),
    "prepare-data-negative-dpo-beta": Case(
        ["prepare-data", "{cfg}", "rl.dpo.beta=-1"], "demo.yaml with rl.dpo.beta=-1: rl.dpo.beta: -1"
    ),
    "pipeline-engine-vllm-not-installed": Case(
        ["pipeline", "{cfg}", "eval.engine=vllm"], "eval.engine=vllm needs vLLM"
    ),
    "eval-deepseek-greedy": Case(
        ["pipeline", "{cfg}", "eval.protocol=deepseek"],
        "demo.yaml with eval.protocol=deepseek: eval.protocol=deepseek samples several",
    ),
    "eval-unknown-protocol": Case(["eval", "{cfg}", "eval.protocol=lm_eval"], "'lm_eval' is not one of"),
    "eval-unknown-model": Case(
        ["eval", "{cfg}", "eval.models=[base,gpt]"], "command line: eval.models[1]: 'gpt' is not one of", needs="data"
    ),
    "eval-no-dataset": Case(
        ["eval", "{cfg}", "eval.datasets=[]"], "demo.yaml with eval.datasets=[]: eval.datasets: empty", needs="data"
    ),
    "eval-unknown-dataset": Case(
        ["eval", "{cfg}", "eval.datasets=[mmlu]"],
        "demo.yaml with eval.datasets=[mmlu]: eval.datasets: unknown dataset 'mmlu'",
        needs="data",
    ),
    "eval-dataset-not-in-run": Case(
        ["eval", "{cfg}", "eval.datasets=[gsm8k_test]"],
        "demo.yaml with eval.datasets=[gsm8k_test]: eval.datasets: gsm8k_test is not part of this run",
        needs="data",
    ),
    "report-folder-as-rollouts": Case(
        ["regime-w", "report", "{src}"], "a folder, not a JSONL file", setup=lambda src: src.mkdir(parents=True)
    ),
    "report-trajectory-not-an-object": Case(
        ["regime-w", "report", "{src}/r.jsonl"],
        "r.jsonl:1: trajectories[0]: expected a JSON object, got null",
        setup=lambda src: _rollouts(src, "[null]"),
    ),
    "report-trajectory-text-not-a-string": Case(
        ["regime-w", "report", "{src}/r.jsonl"],
        "r.jsonl:1: trajectories[0].text: expected a string, got number",
        setup=lambda src: _rollouts(src, '[{"arm": "direct", "text": 42}]'),
    ),
    "report-out-is-a-folder": Case(
        ["regime-w", "report", "{src}/r.jsonl", "--out", "{src}"],
        "a folder; give the report's file name",
        setup=lambda src: _rollouts(src, '[{"arm": "direct", "text": "#### 4"}]'),
    ),
    "report-missing-rollouts": Case(["regime-w", "report", "{src}/none.jsonl"], "none.jsonl: file not found"),
    "report-bad-regime-w-ordering": Case(
        ["regime-w", "report", "{src}/none.jsonl", "--config", "{src}/run.yaml"],
        "run.yaml: regime_w: correct_reward must exceed consensus_weight",
        setup=_yaml("regime_w:\n  consensus_weight: 0.95\n"),
    ),
    "report-bad-regime-w-weights": Case(
        ["regime-w", "report", "{src}/none.jsonl", "--config", "{src}/run.yaml"],
        "w_end, w_path and w_cf must be >= 0 with a positive sum",
        setup=_yaml("regime_w:\n  w_end: 0.0\n  w_path: 0.0\n  w_cf: 0.0\n"),
    ),
    "report-unknown-regime-w-key": Case(
        ["regime-w", "report", "{src}/none.jsonl", "--config", "{src}/run.yaml"],
        "regime_w: unknown key 'w_ned'",
        setup=_yaml("regime_w:\n  w_ned: 0.5\n"),
    ),
    "rollouts-bad-regime-w-ordering": Case(
        ["collect-rollouts", "{cfg}", "regime_w.consensus_weight=0.95"], "correct_reward must exceed", needs="sft"
    ),
    "rollouts-unknown-only-arm": Case(
        ["collect-rollouts", "{cfg}", "regime_w.only_arms=[nope]"],
        "regime_w.only_arms: unknown arm(s) ['nope']",
        needs="sft",
    ),
    "rollouts-new-arm-incomplete": Case(
        ["collect-rollouts", "{cfg}", "regime_w.arms=[{{name: mine, family: compute}}]"],
        "regime_w.arms: new arm 'mine' needs ['system_prompt', 'temperature']",
        needs="sft",
    ),
    # the pipeline refuses a Regime W setting before its first stage (no run folder made), and so does the plan
    "pipeline-bad-regime-w": Case(
        ["pipeline", "{cfg}", "regime_w.consensus_weight=0.95"], "correct_reward must exceed"
    ),
    "plan-unknown-only-arm": Case(["plan", "{cfg}", "regime_w.only_arms=[nope]"], "regime_w.only_arms: unknown arm(s)"),
    "report-unknown-only-arm": Case(
        ["regime-w", "report", "{src}/none.jsonl", "--config", "{src}/run.yaml"],
        "regime_w.only_arms: unknown arm(s) ['nope']",
        setup=_yaml("regime_w:\n  only_arms: [nope]\n"),
    ),
    "train-ppo-key-typo": Case(
        ["train-ppo", "{cfg}", "rl.rloo.betta=0.1"], "rl.rloo.betta: not a setting of TRL's RLOOConfig"
    ),
    # train-ppo trains rl.rloo; the config's own algorithm's section (demo: dpo) is still checked at the start
    "train-ppo-bad-dpo-section": Case(["train-ppo", "{cfg}", "rl.dpo.beta=-1"], "rl.dpo.beta: -1; DPO's beta must be"),
    # --- the command line itself: argparse's usage line, then its error as looper's one error line
    "stage-marker-corrupt": Case(["sft", "{cfg}"], "stages/sft.json: not a valid settings record", needs="sft"),
    "adapter-record-corrupt": Case(
        ["eval", "{cfg}"], "lora_sft/looper_adapter.json: not a valid settings record", needs="sft"
    ),
    "rollouts-without-scores": Case(
        ["build-preferences", "{cfg}"], "rl_rollouts.jsonl:1: trajectories[0]: no Regime W scores", needs="rollouts"
    ),
    "trainer-key-typo": Case(
        ["sft", "{cfg}", "sft.trainer.max_step=3"],
        "sft.trainer.max_step: not a setting of TRL's SFTConfig (did you mean 'max_steps'?)",
    ),
    "command-without-config": Case(["sft"], "looper: error: the following arguments are required: config"),
    "unknown-command": Case(["nope"], "invalid choice: 'nope'"),
    "unknown-option": Case(["eval", "{cfg}", "--bogus"], "unrecognized arguments: --bogus"),
    "regime-w-without-tool": Case(["regime-w"], "the following arguments are required: TOOL"),
    "pipeline-from-after-to": Case(
        ["pipeline", "{cfg}", "--from", "eval", "--to", "sft"], "--from eval comes after --to sft"
    ),
    "name-is-a-path": Case(["prepare-data", "{cfg}", "name=a/b"], "name: 'a/b' is not a folder name"),
    "runs-dir-is-a-file": Case(
        ["prepare-data", "{cfg}", "runs_dir={src}/afile"],
        "cannot make the runs folder",
        setup=lambda src: (src.mkdir(parents=True), (src / "afile").write_text("x")),
    ),
}


@pytest.fixture(scope="module")
def prepared_runs(tmp_path_factory, tiny_model_dir):
    """Run folders at each state a case starts from, made once and copied per case."""
    base = tmp_path_factory.mktemp("states")
    common = [
        f"model.name_or_path={tiny_model_dir}",
        "data.symbolic_train_size=20",
        "data.symbolic_test_size=4",
        "sft.trainer.max_steps=1",
        "sft.lora.r=4",
        "rollouts.num_questions=2",
        "rollouts.max_new_tokens=8",
        "preferences.min_margin=0.0",
        "rl.dpo.max_steps=1",
    ]
    states = {}
    for state, stages in {
        "data": ["prepare-data"],
        "sft": ["prepare-data", "sft"],
        "rollouts": ["prepare-data", "sft", "collect-rollouts"],
        "preferences": ["prepare-data", "sft", "collect-rollouts", "build-preferences"],
        "rl": ["prepare-data", "sft", "collect-rollouts", "build-preferences", "train-rl"],
    }.items():
        for stage in stages:
            run_looper(stage, "configs/demo.yaml", f"runs_dir={base / state}", *common, cwd=REPO)
        states[state] = base / state
    return states, common


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_cleanly(name, tmp_path, prepared_runs):
    import shutil

    case = CASES[name]
    missing = {
        "liger-not-installed": "liger_kernel",
        "engine-vllm-not-installed": "vllm",
        "pipeline-engine-vllm-not-installed": "vllm",
    }
    if name in missing and importlib.util.find_spec(missing[name]) is not None:
        pytest.skip(f"{missing[name]} is installed here")
    if name.startswith("quantized-base-") and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here")
    states, common = prepared_runs
    runs, src = tmp_path / "runs", tmp_path / "src"
    if case.needs != "nothing":
        shutil.copytree(states[case.needs], runs)
    if name == "rollouts-invalid-line":
        path = runs / "demo" / "data" / "rl_rollouts.jsonl"
        lines = path.read_text().splitlines()
        path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2] + "\n")
        (runs / "demo" / "stages" / "build-preferences.json").unlink(missing_ok=True)
    if name == "rollouts-without-scores":  # a rollouts file in the report's shape, not collect-rollouts' own
        path = runs / "demo" / "data" / "rl_rollouts.jsonl"
        record = json.loads(path.read_text().splitlines()[0])
        record["trajectories"] = [{"arm": t["arm"], "text": t["text"]} for t in record["trajectories"]]
        path.write_text(json.dumps(record) + "\n")
        (runs / "demo" / "stages" / "build-preferences.json").unlink(missing_ok=True)
    if name == "stage-marker-corrupt":
        (runs / "demo" / "stages" / "sft.json").write_text("{broken")
    if name == "adapter-record-corrupt":
        (runs / "demo" / "checkpoints" / "lora_sft" / "looper_adapter.json").write_text("[1, 2")
    case.setup(src)
    argv = [a.format(cfg="configs/demo.yaml", src=src) for a in case.argv]
    if (
        argv[0] != "regime-w" and len(argv) > 1
    ):  # stage, config, then the shared overrides, then the case's own (the last one wins)
        argv = argv[:2] + [f"runs_dir={runs}", *common] + argv[2:]
    before = snapshot(runs)
    started = time.monotonic()
    proc = run_looper(*argv, cwd=REPO, check=False)
    elapsed = time.monotonic() - started
    errors = [line for line in proc.stderr.splitlines() if line.startswith("looper: error:")]
    assert proc.returncode != 0, f"{name}: exit 0\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}"
    assert "Traceback" not in proc.stderr, f"{name}: traceback\n{proc.stderr[-3000:]}"
    assert len(errors) == 1 and proc.stderr.rstrip().splitlines()[-1] == errors[0], (
        f"{name}: not one last error line\n{proc.stderr[-2000:]}"
    )
    assert case.expect in errors[0], f"{name}: {errors[0]!r} does not say {case.expect!r}"
    assert snapshot(runs) == before, f"{name}: the run folder changed"
    assert not (runs / "demo.lock").exists()
    if name.startswith("hub-"):
        assert elapsed < 30, f"{name}: took {elapsed:.0f} s to fail offline"


def test_an_error_names_the_command_line_overrides_that_set_its_fields():
    """An error names the overrides that set the fields it is about (its ``fields``), each key's last value: those
    that set a field, a section above one or a key inside one; none, when the file is at fault."""
    from looper.entrypoint import _origin

    given = ["sft.trainer.max_steps=1", "sft.trainer.max_steps=abc", "sft.trainer.learning_rat=1e-4", "seed=3"]
    assert _origin("c.yaml", given, ("sft.trainer.max_steps",)) == "c.yaml with sft.trainer.max_steps=abc"
    assert _origin("c.yaml", given, ("sft.trainer.learning_rat",)) == "c.yaml with sft.trainer.learning_rat=1e-4"
    divisible = ("rl.grpo.generation_batch_size", "rl.grpo.num_generations")
    assert (
        _origin("c.yaml", ["rl.grpo.num_generations=3", "rl.grpo.learning_rate=1e-5"], divisible)
        == "c.yaml with rl.grpo.num_generations=3"
    )
    assert _origin("c.yaml", ["data.source=local"], ("data.path", "data.source")) == "c.yaml with data.source=local"
    assert _origin("c.yaml", ["sft=3"], ("sft.trainer",)) == "c.yaml with sft=3"
    assert (
        _origin("c.yaml", ["seed=3", "sft.trainer.max_steps=5"], ("sft.trainer",))
        == "c.yaml with sft.trainer.max_steps=5"
    )
    # the file's own mistakes: an override beside them, or a section override that does not set the field
    assert _origin("c.yaml", ["rl.grpo.logging_steps=1"], divisible) == "c.yaml"
    assert _origin("c.yaml", ["rl.dpo={max_steps: 3}"], ("rl.dpo.beta",)) == "c.yaml"
    assert _origin("c.yaml", given, ("rl.dpo.beta",)) == _origin("c.yaml", None, ("rl.dpo.beta",)) == "c.yaml"
    assert _origin("c.yaml", given, ()) == "c.yaml"


def test_a_refusal_carries_the_fields_it_is_about(tmp_path):
    """The fields an error is about are set where it is raised, not read back from its text: each field a check
    across fields names, and the settings that TRL's own error (text only) names."""
    from looper.config import ConfigError, RegimeWConfig, load_config
    from looper.regime_w.reward import check_reward_config
    from looper.trainers import trl_config

    config = load_config(
        REPO / "configs" / "demo.yaml", ["rl.algorithm=grpo", "rl.grpo.num_generations=3", "rl.mix_arms=false"]
    )
    with pytest.raises(ConfigError, match=r"generation_batch_size \(16\) must be divisible by num_generations") as err:
        trl_config("grpo", config, tmp_path, on_this_machine=False)
    assert err.value.fields == ("rl.grpo.generation_batch_size", "rl.grpo.num_generations")
    with pytest.raises(ConfigError, match="correct_reward must exceed") as err:
        check_reward_config(RegimeWConfig(consensus_weight=0.95))
    assert err.value.fields == (
        "regime_w.correct_reward",
        "regime_w.consensus_weight",
        "regime_w.length_penalty",
        "regime_w.truncation_penalty",
    )
    with pytest.raises(ConfigError, match=r"command line: eval.datasets\[0\]: expected str, got 3") as err:
        load_config(REPO / "configs" / "demo.yaml", ["eval.datasets=[3]"])
    assert err.value.fields == ("eval.datasets",)  # a list's item has no key of its own


def test_every_config_value_error_says_which_fields_it_is_about():
    """A ConfigValueError is always about config fields: each one raised in looper passes them (``fields=``)."""
    import ast

    missing = []
    for path in sorted((REPO / "src" / "looper").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "ConfigValueError"
                and not any(k.arg == "fields" for k in node.keywords)
            ):
                missing.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not missing, missing


def test_a_load_error_is_put_on_the_file_unless_the_file_alone_is_valid(tmp_path):
    """An override beside a mistake in the file does not take the blame for it, for the checks across fields too;
    an empty or numeric name, and a folder given as the config, are refused or taken as a user means them."""
    from looper.config import ConfigError, load_config

    bad = tmp_path / "bad.yaml"
    for text, message in (
        ("name: a/b\n", "name: 'a/b' is not a folder name"),
        ("data:\n  path: /x\n", "data.path is read only with data.source=local"),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=rf"^{bad}: {message}"):
            load_config(bad, ["seed=5"])
    for name in ("''", "' '"):
        with pytest.raises(ConfigError, match=r"^command line: name: .* is not a folder name \(not empty"):
            load_config(None, [f"name={name}"])
    assert load_config(None, ["name=123"]).name == "123"
    with pytest.raises(ConfigError, match=rf"^{tmp_path}: a folder, not a config file"):
        load_config(tmp_path)


def test_a_stage_module_run_without_its_config_ends_in_one_looper_error_line():
    """``python -m looper.<stage>.<step>`` is the same command as ``looper STAGE``: its usage error ends alike."""
    proc = subprocess.run(
        [sys.executable, "-m", "looper.baseline_sft.train_sft"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1] == "looper: error: the following arguments are required: config"


def test_a_second_process_on_the_same_run_folder_is_refused(tmp_path):
    """One process holds the run folder; a second `looper` on it is refused by the lock and writes nothing;
    once the holder is killed (-9, no cleanup), the next command runs."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\n"
                "from looper.config import load_config\n"
                "from looper.entrypoint import lock_run_folder\n"
                f"lock_run_folder(load_config('configs/demo.yaml', ['runs_dir={tmp_path}']), 'sft')\n"
                "print('locked', flush=True)\n"
                "time.sleep(120)\n"
            ),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = run_looper(
            "prepare-data",
            "configs/demo.yaml",
            f"runs_dir={tmp_path}",
            "data.symbolic_train_size=10",
            "data.symbolic_test_size=2",
            cwd=REPO,
            check=False,
        )
        assert (
            proc.returncode != 0
            and "is in use by another looper process" in proc.stderr
            and f"pid {holder.pid}" in proc.stderr
        )
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "demo").exists()
    finally:
        holder.kill()
        holder.wait()
    proc = run_looper(
        "prepare-data",
        "configs/demo.yaml",
        f"runs_dir={tmp_path}",
        "data.symbolic_train_size=10",
        "data.symbolic_test_size=2",
        cwd=REPO,
    )
    assert (tmp_path / "demo" / "data" / "gsm_symbolic_train.jsonl").exists()
    assert not (tmp_path / "demo.lock").exists()  # released and removed at exit


def test_ctrl_c_ends_in_one_line_that_says_how_to_resume(monkeypatch, capsys):
    """Ctrl-C anywhere in a command: no traceback of wherever it landed, the shell's status for SIGINT (130)."""
    from looper import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_dispatch", interrupted)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["plan", "configs/demo.yaml"])
    assert stopped.value.code == 130
    assert capsys.readouterr().err.strip() == "looper: interrupted; run the same command again to resume"
