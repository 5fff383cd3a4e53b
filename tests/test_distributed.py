"""Past one GPU, what can be checked on a CPU: the accelerate configs, sharded loading, and the trainer settings
looper adapts to a sharding launch. The launches themselves (DDP, FSDP, ZeRO-3 on GPUs) are measured by
bench/scaling.py; two-process DDP training on CPU (gloo) is in test_sharding.py."""

from pathlib import Path

import pytest

from looper.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIGS = REPO / "configs" / "accelerate"


@pytest.mark.parametrize("name,kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed_zero3", "DEEPSPEED")])
def test_accelerate_configs_load_and_say_how_to_launch(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    path = ACCELERATE_CONFIGS / f"{name}.yaml"
    cfg = load_config_from_file(str(path))
    assert cfg.distributed_type == kind and str(cfg.mixed_precision) == "bf16" and cfg.num_processes == 2
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert f"accelerate launch --config_file configs/accelerate/{name}.yaml -m looper.cli" in header
    if name == "fsdp":
        fsdp = cfg.fsdp_config
        assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_reshard_after_forward"] is True  # full shard
        assert (
            fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
            and fsdp["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
        )
        assert fsdp["fsdp_cpu_ram_efficient_loading"] is True
    if name == "deepspeed_zero3":
        ds = cfg.deepspeed_config
        assert ds["zero_stage"] == 3 and ds["zero3_init_flag"] is True and ds["zero3_save_16bit_model"] is True


def test_sharding_launch_is_recognised_and_fsdp_checkpointing_replaces_the_trainers(monkeypatch, tmp_path):
    from looper.modeling import sharded_training
    from looper.trainers import make_trl_config

    assert sharded_training() is None
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    assert sharded_training() is None  # ZeRO-2 keeps whole weights on every GPU
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert sharded_training() == "deepspeed-zero3"
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert sharded_training() == "fsdp"

    monkeypatch.setenv("FSDP_ACTIVATION_CHECKPOINTING", "true")
    config = load_config(None, [])  # TRL's SFTConfig turns gradient checkpointing on by default
    assert make_trl_config("sft", config, tmp_path).activation_checkpointing is False
    asked = load_config(None, ["sft.trainer.activation_checkpointing=true"])
    with pytest.raises(ConfigError, match="fsdp_activation_checkpointing"):
        make_trl_config("sft", asked, tmp_path)


def test_full_sft_estimate_is_per_gpu_under_sharding(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from looper.baseline_sft.train_sft import full_sft_memory_estimate
    from looper.trainers import make_trl_config

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    args = make_trl_config("sft", load_config(None, []), tmp_path)
    one, two = full_sft_memory_estimate(model, args), full_sft_memory_estimate(model, args, shards=2)
    for part in ("weights", "gradients", "optimizer"):
        assert two[part] == pytest.approx(one[part] / 2)
    assert two["activations"] == one["activations"]


def test_training_loads_leave_placement_to_a_sharding_launch(monkeypatch, tiny_model_dir):
    """Under FSDP / ZeRO-3 a training stage's model is not moved onto the GPU whole (the trainer's accelerator
    shards it); without such a launch it is. A CPU machine stands in for a GPU one: moving to cuda fails here."""
    import accelerate
    import torch

    from looper.modeling import load_model

    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", "model.dtype=float32"]).model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(accelerate, "PartialState", lambda **kwargs: None)
    with pytest.raises((AssertionError, RuntimeError), match="CUDA|cuda|NVIDIA"):
        load_model(cfg, for_training=True)  # no sharding launch: onto this process's GPU
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    model = load_model(cfg, for_training=True)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    with pytest.raises((AssertionError, RuntimeError), match="CUDA|cuda|NVIDIA"):
        load_model(cfg)  # generation stages (eval, rollouts) still place the model themselves


def test_generation_speed_counts_every_process():
    from looper.generation import generation_speed

    speed = generation_speed(
        [
            {"engine": "vllm", "tokens": 600, "seconds": 2.0, "peak_gpu_memory_gib": 10.0},
            {"engine": "vllm", "tokens": 400, "seconds": 2.5, "peak_gpu_memory_gib": 9.0},
        ]
    )
    assert speed == {
        "engine": "vllm",
        "processes": 2,
        "generated_tokens": 1000,
        "generation_s": 2.5,
        "tokens_per_s": 400.0,
        "peak_gpu_memory_gib": [10.0, 9.0],
        "engine_gpu_memory_gib": [None, None],
    }
