"""sft: supervised fine-tuning on GSM8K solutions with TRL's SFTTrainer (LoRA / QLoRA, or full).

    looper sft configs/demo.yaml
    python -m looper.baseline_sft.train_sft configs/r1-distill-llama-8b.yaml sft.lora_preset=aggressive

Trains on ``data/gsm8k_train.jsonl`` with the plan's prompt ("You are a careful math tutor ...",
the problem, "Solution:") or the model's chat template (``model.prompt_format: chat``); the target
is GSM8K's full worked solution and the loss is on the completion only (TRL's prompt-completion
format). ``sft.method: lora`` saves a PEFT adapter + tokenizer to ``checkpoints/lora_sft``;
``sft.method: full`` saves the whole model to ``checkpoints/sft``. Killing the run and running the
same command again resumes from the last trainer checkpoint in ``work/sft``.
"""

from __future__ import annotations

import logging
from typing import Any

from looper.config import RunConfig
from looper.modeling import load_model, load_tokenizer, lora_config
from looper.prompts import sft_example
from looper.runs import InputError, RunDir, check_stage, finish_stage, read_jsonl, set_seed, stage_hash, start_stage
from looper.trainers import check_output_free, make_trl_config, metrics_callback, prepare_work_dir, save_atomically

log = logging.getLogger("looper")

STAGE = "sft"


def sft_output_dir(run: RunDir, config: RunConfig):
    return run.lora_sft if config.sft.method == "lora" else run.full_sft


def build_dataset(config: RunConfig, run: RunDir) -> Any:
    from datasets import Dataset

    rows = read_jsonl(run.train, required=("question", "answer"))
    if not rows:
        raise InputError(f"{run.train}: the training set is empty")
    examples = [sft_example(r["question"], r["answer"], config.model.system_prompt, config.model.prompt_format) for r in rows]
    return Dataset.from_list(examples)


def main(config: RunConfig) -> RunDir:
    run = RunDir(config.run_dir)
    if not run.train.exists():
        raise InputError(f"{run.train}: not found; run `looper prepare-data {config.name}` first (same config)")
    target = sft_output_dir(run, config)
    chash = stage_hash(config, STAGE)
    if check_stage(run, STAGE, config) and (target / "looper_adapter.json").exists():
        print(f"sft: {target} is complete for this config; nothing to do (delete it to train again)")
        return run
    check_output_free(target, chash, STAGE)
    dataset = build_dataset(config, run)
    resume_from = prepare_work_dir(run.work_dir(STAGE), chash, STAGE)
    run = start_stage(config, STAGE)
    set_seed(config.seed)

    from trl import SFTTrainer

    tokenizer = load_tokenizer(config.model)
    model = load_model(config.model)
    peft_config = lora_config(config.sft.lora_preset, config.sft.lora, model) if config.sft.method == "lora" else None
    if config.sft.method == "full" and config.model.quantization != "none":
        raise InputError("sft.method=full trains every weight and cannot use a quantized base; set model.quantization=none")
    args = make_trl_config("sft", config, run.work_dir(STAGE))
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[metrics_callback(run.log_path(STAGE))])
    if peft_config is not None:
        trainer.model.print_trainable_parameters()
    result = trainer.train(resume_from_checkpoint=resume_from)
    save_atomically(trainer.model, tokenizer, target, {
        "config_hash": chash, "base_model": config.model.name_or_path, "method": config.sft.method,
        "train_loss": result.training_loss, "global_step": result.global_step,
    })
    finish_stage(run, STAGE, config, output=str(target), train_loss=result.training_loss, steps=result.global_step)
    print(f"sft: {result.global_step} steps, train loss {result.training_loss:.4f} -> {target}")
    return run


if __name__ == "__main__":
    from looper.cli import run_stage_module

    run_stage_module(main, __doc__)
