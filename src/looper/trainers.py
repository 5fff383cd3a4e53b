"""What the SFT and RL stages share around TRL's trainers: configs, metrics, resuming, saving.

TRL's own config classes are used as they are: looper only supplies its own defaults (``TRAINER_DEFAULTS``, not
the plan's recipe: docs/plan.md §2) under the user's ``sft.trainer`` / ``rl.dpo`` / ``rl.grpo`` / ``rl.rloo``
fields, and the output folder under the run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from looper.config import ConfigError, RunConfig, check_value, closest_name
from looper.errors import InputError
from looper.files import JsonlAppender, MetricsLog, atomic_write_json, atomic_write_jsonl, read_jsonl
from looper.processes import Shards, is_main_process
from looper.runs import RunDir, Stage, made_with, read_record, settings_record

log = logging.getLogger("looper")
# TRL 1.16 reads transformers' `is_gradient_checkpointing`, deprecated in transformers 5.24 for
# `is_activation_checkpointing` (looper passes the new name itself); the warning, once per trainer, asks nothing of a user
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

COMMON_DEFAULTS: dict[str, Any] = {
    "report_to": "none",  # "tensorboard" or "wandb" in the config turn those on
    "logging_steps": 10,
    "save_strategy": "steps",
    "save_steps": 100,
    "save_total_limit": 2,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,  # a float < 1 is a ratio of the total steps (transformers 5)
    "dataloader_num_workers": 0,
    # DDP: every trainable weight (LoRA or full) gets a gradient each step, so DDP need not search the graph
    # for unused ones (transformers turns the search on for any model that is not a plain PreTrainedModel,
    # e.g. a PEFT model; it costs a traversal of the autograd graph per step)
    "ddp_find_unused_parameters": False,
}

# looper's defaults per trainer (docs/guide.md, "Configuration"); anything in the YAML wins. Not the plan's SFT recipe
# (docs/plan.md §2: batch 1, 256-token sequences, kept in configs/r1-distill-llama-8b-plan.yaml): SFT here takes
# batch 4 x 4 accumulation and 512 tokens (256 tokens cut a quarter of GSM8K examples: §2).
TRAINER_DEFAULTS: dict[str, dict[str, Any]] = {
    "sft": {
        "learning_rate": 2e-4,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 4,
        "max_length": 512,
    },
    "dpo": {
        "learning_rate": 5e-6,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 4,
        "beta": 0.1,
        "max_length": 1024,
    },
    "rft": {
        "learning_rate": 5e-5,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "max_length": 1024,
    },
    "grpo": {
        "learning_rate": 1e-6,
        "num_generations": 8,
        "max_completion_length": 256,
        "per_device_train_batch_size": 8,
        "beta": 0.0,
        "num_train_epochs": 1,
    },
    "rloo": {
        "learning_rate": 1e-6,
        "num_generations": 8,
        "max_completion_length": 256,
        "per_device_train_batch_size": 8,
        "beta": 0.0,
        "num_train_epochs": 1,
    },
}


def _trl_class(kind: str) -> type:
    import trl

    return {
        "sft": trl.SFTConfig,
        "rft": trl.SFTConfig,
        "dpo": trl.DPOConfig,
        "grpo": trl.GRPOConfig,
        "rloo": trl.RLOOConfig,
    }[kind]


def _check_types(cls: type, user: dict[str, Any], section: str) -> None:
    """A key that is not a field of the TRL config (with the closest field's name), or a value of the wrong kind for
    a TRL / transformers field with a plain type (``max_steps: abc``), is a ConfigError here, by the check looper's
    own fields get: the trainer would take it and fail only once the model is loaded, with a traceback."""
    import types
    import typing

    known = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in user:
        if key not in known:  # TRL's own error would be a TypeError from __init__, with no hint
            close = closest_name(key, known, cutoff=0.75)
            raise ConfigError(
                f"{section}.{key}: not a setting of TRL's {cls.__name__}"
                + (f" (did you mean {close!r}?)" if close else ""),
                fields=(f"{section}.{key}",),
            )
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # a hint that cannot be resolved: leave the values to TRL
        return
    for key, value in user.items():
        hint = hints.get(key)
        args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if hint is not None and set(args) <= {int, float, bool, str, type(None)}:  # richer types are TRL's to check
            check_value(value, hint, f"{section}.{key}")


def trl_config(kind: str, config: RunConfig, output_dir: Path, *, on_this_machine: bool = True) -> Any:
    """TRL's SFTConfig / DPOConfig / GRPOConfig / RLOOConfig from looper defaults + the YAML's trainer section
    (``rft`` is an SFTConfig read from ``rl.rft``), every value checked; nothing is written. GRPO / RLOO also get the
    values train-rl sets over the user's section (``online_settings``), so the config checked is the one trained with.

    A stage calls it before anything else reads the run folder, so that a bad value is reported as such and not as
    a finished stage "made with other settings"; ``looper plan`` calls it to refuse what the stage would. Whether
    this machine has the packages the section asks for is not checked here: ``make_trl_config`` adds that.
    ``on_this_machine=False`` (``looper plan``, made on any machine for the GPU the run is meant for): the values
    whose check depends on this machine's hardware (``tf32``, ``bf16``) are checked for type only.

    Raises:
        ConfigError: a value of the wrong type, an unknown field, a value TRL / transformers rejects, DPO's
            ``beta`` <= 0, trainer activation checkpointing under FSDP's own, or a GRPO / RLOO value train-rl
            would replace with its own (``_check_online_forced``).
    """
    section = "sft.trainer" if kind == "sft" else f"rl.{kind}"
    user = config.sft.trainer if kind == "sft" else getattr(config.rl, kind)
    on_gpu = torch.cuda.is_available()
    bf16 = on_gpu and torch.cuda.is_bf16_supported() and config.model.dtype in ("auto", "bfloat16")
    kwargs = {
        **COMMON_DEFAULTS,
        **TRAINER_DEFAULTS[kind],
        "bf16": bf16,
        "use_cpu": not on_gpu,
        **user,
        "output_dir": str(output_dir),
        "seed": config.seed,
    }
    if os.environ.get("FSDP_ACTIVATION_CHECKPOINTING", "false").lower() == "true":
        # FSDP's own activation checkpointing (configs/accelerate/fsdp.yaml) replaces the trainer's; transformers
        # refuses both at once, and TRL's SFTConfig turns the trainer's on by default
        if user.get("gradient_checkpointing") or user.get("activation_checkpointing"):
            raise ConfigError(
                f"{section}.activation_checkpointing: the accelerate config turns on FSDP's activation "
                "checkpointing (fsdp_activation_checkpointing), which replaces it; remove one of the two",
                fields=(f"{section}.activation_checkpointing", f"{section}.gradient_checkpointing"),
            )
        kwargs["activation_checkpointing"] = False  # transformers >= 5.24's name (gradient_checkpointing is deprecated)
    # transformers (>= 5.24) renamed gradient_checkpointing* to activation_checkpointing* and warns on the old names,
    # which TRL's configs still default (to True): pass the new names, with TRL's default where none is given
    for old, new in (
        ("gradient_checkpointing", "activation_checkpointing"),
        ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
    ):
        if old in kwargs and new not in kwargs:
            kwargs[new] = kwargs.pop(old)
    if "activation_checkpointing" not in kwargs:
        kwargs["activation_checkpointing"] = next(
            f.default for f in dataclasses.fields(_trl_class(kind)) if f.name == "gradient_checkpointing"
        )
    _check_types(_trl_class(kind), kwargs, section)
    if not on_this_machine:
        # transformers refuses tf32: true without an Ampere GPU, and bf16: true on a GPU without bf16 unless use_cpu
        kwargs.update(tf32=None, use_cpu=True)
    # values the trainer would refuse only when it builds its optimizer or data loader (torch's "Invalid learning
    # rate", a DataLoader of batch size 0), after the stage has loaded the model and written its work folder; and
    # values nothing refuses but that cannot train: an infinite learning rate diverges at the first step, a
    # max_length below 1 cuts every example to nothing (TRL then fails on an empty dataset, or trains on nothing)
    for field, ok, what in (
        ("learning_rate", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
        ("per_device_train_batch_size", lambda v: v >= 1, ">= 1"),
        ("gradient_accumulation_steps", lambda v: v >= 1, ">= 1"),
        ("num_train_epochs", lambda v: v >= 0, ">= 0"),
        ("max_steps", lambda v: v == -1 or v > 0, "-1 (run the epochs) or > 0"),
        ("max_length", lambda v: v >= 1, ">= 1 tokens, or null (no truncation)"),
        ("max_completion_length", lambda v: v >= 1, ">= 1 tokens"),
    ):
        value = kwargs.get(field)  # a wrong type was refused above (_check_types)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not ok(value):
            raise ConfigError(f"{section}.{field}: {value!r}; must be {what}", fields=(f"{section}.{field}",))
    if kwargs.get("max_steps", -1) <= 0 and kwargs.get("num_train_epochs") == 0:
        # transformers runs zero steps and saves the untrained adapter as if it had trained
        raise ConfigError(
            f"{section}.num_train_epochs: 0 with max_steps {kwargs.get('max_steps', -1)} trains nothing; "
            "set num_train_epochs > 0 or max_steps > 0",
            fields=(f"{section}.num_train_epochs",),
        )
    if kind == "dpo" and not (isinstance(kwargs.get("beta"), (int, float)) and kwargs["beta"] > 0):
        # TRL takes any number; DPO's beta scales the log-ratio margin (Rafailov et al. 2023, eq. 7): at 0 nothing is
        # learnt, below 0 the policy is trained towards the rejected answers
        raise ConfigError(
            f"{section}.beta: {kwargs.get('beta')!r}; DPO's beta must be a number > 0 (e.g. 0.1)",
            fields=(f"{section}.beta",),
        )
    if kind == "dpo":
        # DPOConfig takes any name; DPOTrainer refuses an unknown one only at its first step, after the model loaded
        loss_types = kwargs.get("loss_type", ["sigmoid"])
        for name in [loss_types] if isinstance(loss_types, str) else loss_types:
            if name not in DPO_LOSS_TYPES:
                close = closest_name(str(name), DPO_LOSS_TYPES)
                raise ConfigError(
                    f"{section}.loss_type: {name!r} is not a DPO loss of TRL's"
                    f"{f' (did you mean {close!r}?)' if close else ''}; known: {', '.join(DPO_LOSS_TYPES)}",
                    fields=(f"{section}.loss_type",),
                )
    if kind in ("grpo", "rloo"):
        _check_online_forced(config, user, section)
        kwargs.update(online_settings(config, kind, kwargs))
    cls = _trl_class(kind)
    # TRL's and transformers' errors are text only: the error is about the section's settings they name
    names = {f.name for f in dataclasses.fields(cls)} | set(user)
    try:
        return cls(**kwargs)
    except TypeError as err:  # unknown field
        raise ConfigError(
            f"{section}: {err} (see TRL's {cls.__name__})", fields=_settings_named(str(err), section, names)
        ) from None
    except ValueError as err:  # a value TRL/transformers rejects
        raise ConfigError(f"{section}: {err}", fields=_settings_named(str(err), section, names)) from None


def _settings_named(text: str, section: str, names: set[str]) -> tuple[str, ...]:
    """``section.NAME`` for each of ``names`` that ``text`` names as a word (``rl.grpo.num_generations`` in
    "generation_batch_size (16) must be divisible by num_generations (3)"), in sorted order."""
    return tuple(f"{section}.{name}" for name in sorted(names) if re.search(rf"\b{re.escape(name)}\b", text))


def online_settings(config: RunConfig, kind: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The GRPO / RLOO values looper sets over the user's ``rl.<kind>`` section (``kwargs``: the section with looper's
    defaults): the Regime W part weights as ``reward_weights`` (train-rl's reward functions, one per part), no
    shuffling (the rows keep each question's arms together and are shuffled by question with the run's seed),
    ``mask_truncated_completions`` from ``rl.truncation``, and with ``rl.mix_arms`` a generation batch of whole
    questions: ``num_generations`` completions of every arm, as many questions as fill whole training steps (the
    least common multiple of the group and ``per_device_train_batch_size``), or the user's multiple of the group.

    Raises:
        ConfigError: ``generation_batch_size`` set under ``rl.mix_arms`` to a value that splits a question's group.
    """
    from looper.regime_w.arms import build_all_arms
    from looper.regime_w.reward import reward_part_weights

    section = f"rl.{kind}"
    settings: dict[str, Any] = {
        "reward_weights": reward_part_weights(config.regime_w, penalize_truncation=config.rl.truncation == "penalize"),
        "shuffle_dataset": False,
        "mask_truncated_completions": config.rl.truncation == "mask",
    }
    generations, per_step = kwargs.get("num_generations"), kwargs.get("per_device_train_batch_size")
    if config.rl.mix_arms and isinstance(generations, int):  # another type: TRL's own error names it
        group = generations * len(build_all_arms(config.regime_w))
        asked = kwargs.get("generation_batch_size")
        if asked is not None and asked % group:
            raise ConfigError(
                f"{section}.generation_batch_size={asked}: with rl.mix_arms it must be a multiple of "
                f"num_generations x arms = {group}, so that every question's group is generated together",
                fields=(f"{section}.generation_batch_size", f"{section}.num_generations", "rl.mix_arms"),
            )
        # TRL also needs the generation batch to be a multiple of the batch of one step (GRPO / RLOO run in one
        # process: check_one_process): the fewest whole questions that fill whole steps
        steps_fill = math.lcm(group, per_step) if isinstance(per_step, int) and per_step > 0 else group
        settings["generation_batch_size"] = asked or steps_fill
        settings["steps_per_generation"] = None  # TRL derives it from generation_batch_size (it refuses both set)
    return settings


def _check_online_forced(config: RunConfig, user: dict[str, Any], section: str) -> None:
    """Refuse a GRPO / RLOO value that looper would replace with its own (``online_settings``) instead of dropping it
    silently; a value equal to looper's passes."""
    mask = config.rl.truncation == "mask"
    for key, refused, why, causes in (
        (
            "reward_weights",
            "reward_weights" in user,
            (
                "looper sets it to the Regime W weights, one per reward part; set regime_w.correct_reward / "
                "consensus_weight / missing_penalty / truncation_penalty instead"
            ),
            (),
        ),
        (
            "shuffle_dataset",
            bool(user.get("shuffle_dataset")),
            (
                "looper sets it to false: the training rows keep each question's arms together (rl.mix_arms), and "
                "looper shuffles the questions itself with the run's seed"
            ),
            (),
        ),
        (
            "mask_truncated_completions",
            user.get("mask_truncated_completions", mask) != mask,
            f"looper sets it from rl.truncation (now {config.rl.truncation}); set rl.truncation=mask or penalize instead",
            ("rl.truncation",),
        ),
        (
            "steps_per_generation",
            config.rl.mix_arms and user.get("steps_per_generation") is not None,
            (
                "with rl.mix_arms looper sets generation_batch_size to num_generations x arms (every arm of a question "
                "generated and scored as one group), from which TRL derives steps_per_generation; set "
                f"{section}.generation_batch_size to a multiple of num_generations x arms instead, or rl.mix_arms=false"
            ),
            ("rl.mix_arms",),
        ),
    ):
        if refused:
            # fields: the settings that make the value refused, not those the message suggests instead
            raise ConfigError(
                f"{section}.{key}: {json.dumps(user[key], default=str)}: {why}",  # as YAML writes it
                fields=(f"{section}.{key}", *causes),
            )


# The loss names TRL 1.16's DPOTrainer computes (DPOConfig.loss_type's help lists the same; tests/test_config.py
# checks the two agree with the installed TRL)
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)


def check_trainer_sections(config: RunConfig, command: str = "") -> None:
    """Build, and drop, the TRL config of SFT and of the configured RL algorithm, for the GPU the run is meant for
    (``on_this_machine=False``). Every command calls it after loading, so a value TRL or looper refuses in any
    trainer section stops even a stage that does not train before it writes (the run folder records the whole
    config). The section ``command`` trains (``sft``; ``train-rl``: the RL algorithm's; ``train-ppo``: ``rl.rloo``;
    ``pipeline``: both, for the stages it runs) is left to that command, which builds it once, on this machine,
    before it reads the run folder.

    Raises:
        ConfigError: a section's value refused, naming ``section.key``.
    """
    run = RunDir.of(config)
    trained_here = {
        "sft": {"sft"},
        "train-rl": {config.rl.algorithm},
        "train-ppo": {"rloo"},
        "pipeline": {"sft", config.rl.algorithm},
    }.get(command, set())
    for kind, stage in (("sft", "sft"), (config.rl.algorithm, "train-rl")):
        if kind not in trained_here:
            trl_config(kind, config, run.work_dir(stage), on_this_machine=False)


def make_trl_config(kind: str, config: RunConfig, output_dir: Path) -> Any:
    """``trl_config``, for a stage about to train: also refused where it turns on a package this machine lacks.

    Raises:
        ConfigError: as ``trl_config``, or ``use_liger_kernel`` / ``use_vllm`` is true and liger-kernel / vLLM is not
            installed.
    """
    args = trl_config(kind, config, output_dir)
    section = "sft.trainer" if kind == "sft" else f"rl.{kind}"
    for field, package, extra in (("use_liger_kernel", "liger_kernel", "gpu"), ("use_vllm", "vllm", "vllm")):
        # transformers / TRL find a missing package only once the model is loaded (after sampling, for sft.data: self)
        if getattr(args, field, False) and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"{section}.{field}: true needs {package.replace('_', '-')} (looper's {extra} extra: "
                f"pip install -e '.[{extra}]'), or set it to false",
                fields=(f"{section}.{field}",),
            )
    return args


def _answer_end(text: str) -> int | None:
    """Where the answer line of a completion ends (the last ``####`` or ``\\boxed`` line), or None without one."""
    start = max(text.rfind("####"), text.rfind("\\boxed"))
    if start < 0:
        return None
    end = text.find("\n", start)
    return len(text) if end < 0 else end


def check_lengths(
    examples: Any, tokenizer: Any, max_length: int | None, section: str, completions: tuple[str, ...] = ("completion",)
) -> dict[str, int]:
    """How many text examples (``prompt`` + each of ``completions``, with the EOS TRL appends) are longer than
    ``max_length`` tokens, and how many of those lose their answer line, printed as one warning line; the
    counts go into the stage marker. A cut example always loses its EOS: the model learns not to stop.

    Raises:
        InputError: every example's prompt alone fills ``max_length`` (nothing would be trained).
    """
    if not max_length:
        return {"examples_cut": 0, "answers_cut": 0}
    eos = tokenizer.eos_token or ""
    cut = answers = 0
    rows = list(examples)
    prompts = tokenizer([r["prompt"] for r in rows])["input_ids"] if rows else []
    if prompts and all(len(ids) >= max_length for ids in prompts):
        # TRL would drop every example (no completion token left to train) and fail at its first step on an empty
        # data loader ("num_samples=0"), after the model loaded
        raise InputError(
            f"{section}.max_length={max_length}: every example's prompt alone is at least that long "
            f"(the shortest has {min(map(len, prompts))} tokens), so no completion token would be "
            f"trained; raise {section}.max_length"
        )
    for key in completions:
        full = tokenizer([r["prompt"] + r[key] + eos for r in rows])["input_ids"]
        long = [i for i, ids in enumerate(full) if len(ids) > max_length]
        cut += len(long)
        # each cut example up to the end of its answer line (those that have one)
        heads = [rows[i]["prompt"] + rows[i][key][:end] for i in long if (end := _answer_end(rows[i][key])) is not None]
        answers += sum(len(ids) > max_length for ids in tokenizer(heads)["input_ids"]) if heads else 0
    if cut:
        what = " / ".join(completions)
        print(
            f"warning: {section}.max_length={max_length}: {cut} of {len(rows) * len(completions)} {what} examples are "
            f"longer and are cut: all {cut} lose their end-of-sequence token, {answers} lose their answer line too"
        )
    return {"examples_cut": cut, "answers_cut": answers}


class TrainingDiverged(InputError):
    """The loss or gradient norm became NaN / infinite: the run stops before saving anything."""


def metrics_callback(path: Path, section: str = "the trainer section") -> Any:
    """A TrainerCallback that appends every log (loss, learning rate, rewards, ...) to a JSONL file, and stops
    the run with a clear error when the loss or the gradient norm stops being finite (the weights would be
    NaN from there on, and a saved adapter useless)."""
    from transformers import TrainerCallback

    metrics = MetricsLog(path)
    last_finite = {"step": 0}

    class JsonlMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs:
                return
            if state.is_world_process_zero:
                metrics.write(**{"step": state.global_step, "epoch": state.epoch, **logs})
            bad = [k for k in ("loss", "grad_norm") if isinstance(logs.get(k), float) and not math.isfinite(logs[k])]
            if bad:
                raise TrainingDiverged(
                    f"training diverged: {bad[0]} = {logs[bad[0]]} at step {state.global_step} (last finite log at step "
                    f"{last_finite['step']}); nothing was saved. Lower {section}.learning_rate (or set max_grad_norm), "
                    f"delete checkpoints after step {last_finite['step']} in {args.output_dir}, and run again"
                )
            if "loss" in logs or "grad_norm" in logs:
                last_finite["step"] = state.global_step

    return JsonlMetrics()


def map_tensors(value: Any, fn: Any) -> Any:
    """``fn`` applied to every tensor in nested dicts / lists / tuples (a trainer's inputs); the rest as it is."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(v, fn) for v in value)
    return value


def watch_gradients(trainer: Any, work_dir: Path, section: str) -> None:
    """Stop at the first optimizer step whose gradients are not finite, before that step is applied, and keep what
    replays it offline: ``<work_dir>/diverged_step<N>.pt`` holds the step's micro-batches as the loss saw them (after
    the trainer's own preparation: for GRPO / RLOO the completions, masks, advantages and old log-probs) and the
    trainable weights before the step, all on the CPU. The log-time check in ``metrics_callback`` sees a NaN only at
    the next logging step, and transformers replaces a NaN loss in its logs by the running mean
    (``logging_nan_inf_filter``), so a NaN forward pass shows there only as a NaN gradient norm."""
    from transformers import TrainerCallback

    window: list[dict[str, Any]] = []  # the micro-batches since the last optimizer step
    compute_loss = trainer.compute_loss

    def recording_loss(model, inputs, *args, **kwargs):
        window.append({"inputs": inputs, "args": args, "kwargs": kwargs})
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording_loss

    class GradientWatch(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            grads = [g.to_local() if hasattr(g, "to_local") else g for g in grads]  # FSDP: this rank's shard
            bad = bool(grads) and not torch.isfinite(torch.stack([g.float().abs().max() for g in grads])).all().item()
            if bad:
                step = state.global_step + 1
                dump = Path(work_dir) / f"diverged_step{step}.pt"
                trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
                micro_batches = map_tensors(window, lambda t: t.detach().cpu())
                torch.save({"step": step, "micro_batches": micro_batches, "trainable": trainable}, dump)
                raise TrainingDiverged(
                    f"training diverged: non-finite gradients at step {step}, before the optimizer applied them; "
                    f"nothing was saved. The step's {len(window)} micro-batch(es) and the weights before it are in "
                    f"{dump}: scripts/replay_diverged_step.py replays it and names the operation that made them "
                    f"(lower {section}.learning_rate only if the step's weights or loss are the cause)"
                )
            window.clear()

    trainer.add_callback(GradientWatch())


def avoid_cudnn_attention() -> None:
    """Keep PyTorch's cuDNN backend of ``scaled_dot_product_attention`` out of training; sdpa then takes its flash or
    memory-efficient kernel (the math one where neither applies).

    Why: Qwen2.5-Coder-1.5B's LoRA SFT on packed, padding-free 8,192-token micro-batches (a block-diagonal mask over
    ~30 sequences, head_dim 128, GQA 12/2) stopped on non-finite gradients (step 161 of 165 in one run, step 53 in
    another), and ``scripts/replay_diverged_step.py`` replaying the dumped step under autograd's anomaly detection
    named the operation: ``ScaledDotProductCudnnAttentionBackward0 returned nan values`` (torch 2.11.0+cu130, one
    H100; docs/results.md, "Qwen2.5-Coder-1.5B"). The forward pass and the loss were finite; the NaN is born in the
    cuDNN kernel's backward. ``torch.backends.cuda.enable_cudnn_sdp`` is PyTorch's public switch for that backend.
    """
    torch.backends.cuda.enable_cudnn_sdp(False)


def watch_training(trainer: Any, log_path: Path, work_dir: Path, section: str) -> None:
    """Every training stage's watch: metrics to ``log_path`` (stopping on a non-finite logged loss / grad norm), the
    gradient check before each optimizer step (``watch_gradients``), and no cuDNN attention (``avoid_cudnn_attention``).

    Raises:
        InputError: TRL's tokenization left no training example (``max_length`` cut every one to its prompt).
    """
    dataset = getattr(trainer, "train_dataset", None)
    if dataset is not None and len(dataset) == 0:
        # TRL drops the examples that max_length cuts to no completion token; with none left, the data loader's
        # sampler fails with "num_samples=0" at the first step
        raise InputError(
            f"{section}: no training example is left after TRL's tokenization: each one's prompt fills "
            f"{section}.max_length={getattr(trainer.args, 'max_length', None)} tokens; raise it"
        )
    trainer.add_callback(metrics_callback(log_path, section))
    watch_gradients(trainer, work_dir, section)
    avoid_cudnn_attention()


def prepare_work_dir(work_dir: Path, settings: dict[str, Any], stage: str, metrics_path: Path) -> str | None:
    """The trainer's checkpoint folder for this config; returns the checkpoint to resume from, if any.

    A work folder whose checkpoints a different config made is an error rather than a silent resume of other
    settings (``settings``: the stage's result-changing config, recorded in ``looper_settings.json``); one without a
    complete checkpoint is taken over by the new settings. transformers
    writes a checkpoint's files one by one, ``trainer_state.json`` last, so a
    run killed while saving leaves a checkpoint without a readable one: such checkpoints are removed
    and the run resumes from the last complete one. The metrics log is cut back to the steps that
    checkpoint holds, so the resumed run logs every later step once, as an uninterrupted run would.
    Under a multi-process launch the first process does this first; the others then find the same checkpoint.
    """
    shards = Shards()
    with shards.state.main_process_first():
        return _prepare_work_dir(work_dir, settings, stage, metrics_path, write=shards.is_main)


def check_work_dir(work_dir: Path, settings: dict[str, Any], stage: str) -> None:
    """Refuse a work folder whose checkpoints other settings made (an InputError naming the changed keys); reads
    only, so a stage calls it before loading anything, and ``prepare_work_dir`` again before it writes."""
    old_stamp = work_dir / "looper_config_hash"
    record = read_record(work_dir / "looper_settings.json") or (
        {"config_hash": old_stamp.read_text().strip()} if old_stamp.exists() else None
    )
    if _last_checkpoint(work_dir)[0] is None:
        # a run that stopped before its first checkpoint (a refused value, a diverged loss) left nothing to resume:
        # the corrected rerun its error message asks for starts over instead of being refused for the change
        record = None
    made_with(
        work_dir,
        record,
        settings,
        f"its {stage} checkpoints would resume other settings: delete that folder "
        "(or use another run name) to start over",
    )


def _prepare_work_dir(
    work_dir: Path, settings: dict[str, Any], stage: str, metrics_path: Path, write: bool
) -> str | None:
    record_path, old_stamp = work_dir / "looper_settings.json", work_dir / "looper_config_hash"
    check_work_dir(work_dir, settings, stage)
    if not write:
        return _last_checkpoint(work_dir)[0]
    work_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record_path, settings_record(settings))
    old_stamp.unlink(missing_ok=True)
    resume, step = _last_checkpoint(work_dir, remove_incomplete=True)
    if Path(metrics_path).exists():
        with JsonlAppender(metrics_path, key="step") as logged:  # drops a line torn by the kill
            kept = [r for r in logged.records if r.get("step", 0) <= step]
        atomic_write_jsonl(metrics_path, kept)
    if resume is not None:
        print(f"{stage}: resuming from {resume}")
    return resume


def _last_checkpoint(work_dir: Path, remove_incomplete: bool = False) -> tuple[str | None, int]:
    """The newest complete trainer checkpoint in ``work_dir`` and its step ((None, 0) if none); newer incomplete
    ones (no readable ``trainer_state.json``) are skipped, and removed with ``remove_incomplete``."""
    checkpoints = sorted(
        (p for p in work_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for ckpt in checkpoints:
        try:
            return str(ckpt), json.loads((ckpt / "trainer_state.json").read_text())["global_step"]
        except (OSError, ValueError, KeyError):
            if remove_incomplete:
                log.warning("%s: incomplete checkpoint (the run was killed while saving it); removing it", ckpt)
                shutil.rmtree(ckpt)
    return None, 0


def check_output_free(target: Path, settings: dict[str, Any], stage: str) -> None:
    """Refuse to overwrite an adapter/checkpoint made with other settings (its ``looper_adapter.json`` records them;
    a folder without one is refused too: it is not known what made it)."""
    if Path(target).exists():
        remedy = f"it is another {stage} run's output: delete it or use another run name"
        record = read_record(Path(target) / "looper_adapter.json")
        if record is None:
            raise InputError(f"{target}: exists without looper_adapter.json, the record of what made it; {remedy}")
        made_with(target, record, settings, remedy)


def training_speed(metrics_path: Path) -> dict[str, Any]:
    """What a training stage records of its speed, from its metrics log: the tokens the trainer counted (TRL's
    ``num_tokens``: every process's, prompts included, padding-free packs as the trainer sees them), the trainer's
    own run time (the training loop: generation included for GRPO / RLOO, model loading and the save left out),
    their ratio, and, where at least two logged steps carry a count, the steady rate between the first and the last
    of them (the first step's warm-up left out). A resumed run's figures are those of its last part."""
    if not Path(metrics_path).exists():
        return {}
    rows = read_jsonl(metrics_path)
    counted = [r for r in rows if isinstance(r.get("num_tokens"), (int, float)) and "time" in r]
    runtime = next(
        (r["train_runtime"] for r in reversed(rows) if isinstance(r.get("train_runtime"), (int, float))), None
    )
    out: dict[str, Any] = {}
    if counted:
        out["train_tokens"] = int(max(r["num_tokens"] for r in counted))
    if runtime:
        out["train_runtime_s"] = round(runtime, 3)
        if counted:
            out["tokens_per_s"] = round(out["train_tokens"] / runtime, 1)
    first, last = (counted[0], counted[-1]) if counted else ({}, {})
    if len(counted) >= 2 and last["time"] > first["time"] and last["num_tokens"] > first["num_tokens"]:
        out["steady_tokens_per_s"] = round(
            (last["num_tokens"] - first["num_tokens"]) / (last["time"] - first["time"]), 1
        )
        out["steady_steps"] = f"{first['step']}-{last['step']}"
    return out


def save_trained(
    trainer: Any, tokenizer: Any, target: Path, info: dict[str, Any], adapter_names: list[str] | None = None
) -> dict[str, Any]:
    """Save what ``trainer`` trained (``save_atomically``) from the first process, under any launch, and return what
    the stage marker records of it: the peak GPU memory of every process.

    Under FSDP / ZeRO-3 each process holds a shard: accelerate gathers the full state dict first (every process
    takes part), and the first process writes it. Under DDP every process holds the same weights; the first writes.
    """
    from accelerate.utils import DistributedType

    from looper.modeling import peak_gpu_memory_gib

    acc = trainer.accelerator
    state_dict = None
    if acc.distributed_type == DistributedType.DEEPSPEED:
        state_dict = acc.get_state_dict(trainer.model_wrapped)  # the DeepSpeed engine gathers ZeRO-3's partitions
    elif acc.distributed_type == DistributedType.FSDP:
        state_dict = acc.get_state_dict(trainer.model)
    if acc.is_main_process:
        save_atomically(acc.unwrap_model(trainer.model), tokenizer, target, info, adapter_names, state_dict)
    peaks = Shards().gather(peak_gpu_memory_gib())  # a collective: the processes meet here after the save
    return {
        "processes": acc.num_processes,
        "distributed": str(acc.distributed_type).split(".")[-1].lower(),
        "peak_gpu_memory_gib": peaks,
    }


def save_atomically(
    model: Any,
    tokenizer: Any,
    target: Path,
    info: dict[str, Any],
    adapter_names: list[str] | None = None,
    state_dict: dict[str, Any] | None = None,
) -> None:
    """Save a PEFT adapter (or full model) + tokenizer + looper_adapter.json, then rename into place.

    ``adapter_names`` picks the adapters of a PEFT model to save (DPO adds a frozen "ref" copy that
    must not be saved as part of the result); ``state_dict``, the weights to save where the model's own
    are sharded across processes (FSDP / ZeRO-3: gathered by ``save_trained``)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*"):  # left by a save that was killed midway
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        extra = {} if state_dict is None else {"state_dict": state_dict}
        if adapter_names is not None and hasattr(model, "peft_config"):
            model.save_pretrained(tmp, selected_adapters=adapter_names, **extra)
        else:
            model.save_pretrained(tmp, **extra)
        tokenizer.save_pretrained(tmp)
        from looper.modeling import architecture_signature, base_fingerprint

        # the base the weights were trained on, as check_adapter_base compares it: its shape, and its weights read from
        # the checkpoint it was loaded from (a Hub id's commit where it came from the Hub)
        base = model.config.name_or_path
        atomic_write_json(
            tmp / "looper_adapter.json",
            {
                "base_architecture": architecture_signature(model.config),
                "base_checkpoint": base,
                "base_fingerprint": base_fingerprint(base, getattr(model.config, "_commit_hash", None)),
                **info,
            },
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class TrainingStage(Stage):
    """The bookkeeping of a stage that trains (``sft``, a round of ``train-rl``), in the one place the stage enters:
    ``Stage``'s complete-for-this-config check and start / finish records, plus the refusals of an output or a work
    folder other settings made, the resume from the work folder's last complete checkpoint, the watch over
    training (``watch_training``) and the save (``save_trained``). The stage itself loads its inputs and builds the
    TRL trainer, as ``trl/scripts/sft.py`` does::

        stage = TrainingStage(config, "sft", run, output, "sft.trainer")
        if stage.done():
            return run
        stage.check()                      # before anything loads
        trainer = SFTTrainer(...)
        result = stage.train(trainer)      # resumes from the last complete checkpoint
        stage.finish_training(trainer, tokenizer, result, record={...}, marker={...})

    ``output``: the adapter or checkpoint folder; ``section``: the config section the trainer's settings come from
    (named in errors). Until ``train`` nothing is written to the run folder.
    """

    redo_hint = " (delete it to train again)"

    def __init__(
        self, config: RunConfig, stage: str, run: RunDir, output: Path, section: str, label: str | None = None
    ):
        # done: the marker, and the record every looper save puts into the output
        super().__init__(config, stage, run, Path(output), label, needs=(Path(output) / "looper_adapter.json",))
        self.section = section
        self.work_dir, self.log_path = run.work_dir(stage), run.log_path(stage)

    def check(self) -> None:
        """Refuse an output or work folder that other settings made (InputError naming the changed keys); reads only,
        so a stage calls it before loading anything."""
        check_output_free(self.output, self.settings, self.name)
        check_work_dir(self.work_dir, self.settings, self.name)

    def train(self, trainer: Any) -> Any:
        """Record the stage's start, put the watch on ``trainer`` and train it, resuming from the work folder's last
        complete checkpoint (``prepare_work_dir``); returns the trainer's ``TrainOutput``.

        Raises:
            InputError: as ``watch_training``; TrainingDiverged on a non-finite loss or gradient.
        """
        resume_from = prepare_work_dir(self.work_dir, self.settings, self.name, self.log_path)
        self.start()
        watch_training(trainer, self.log_path, self.work_dir, self.section)
        return trainer.train(resume_from_checkpoint=resume_from)

    def finish_training(
        self,
        trainer: Any,
        tokenizer: Any,
        result: Any,
        record: dict[str, Any],
        marker: dict[str, Any],
        adapter_names: list[str] | None = None,
    ) -> None:
        """Save what was trained to ``output`` with its record (the settings, ``record``, the loss and steps), and
        mark the stage complete with ``marker``, the save's figures and the training speed; print the loss."""
        trained = {"train_loss": result.training_loss, "global_step": result.global_step}
        saved = save_trained(
            trainer,
            tokenizer,
            self.output,
            {**settings_record(self.settings), **record, **trained},
            adapter_names=adapter_names,
        )
        self.finish(
            **marker,
            train_loss=result.training_loss,
            steps=result.global_step,
            **saved,
            **training_speed(self.log_path),
        )
        if is_main_process():  # the loss is this process's own; the others' would repeat the line
            print(f"{self.label}: {result.global_step} steps, train loss {result.training_loss:.4f} -> {self.output}")
