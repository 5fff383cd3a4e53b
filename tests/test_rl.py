"""train-rl on a tiny model: DPO, GRPO and RLOO train the adapter and log what they should."""

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import read_jsonl, run_looper
from looper.config import load_config

REPO = Path(__file__).resolve().parents[1]


def args(tmp_path, tiny_model_dir, *extra):
    return [
        "configs/demo.yaml",
        f"runs_dir={tmp_path}",
        f"model.name_or_path={tiny_model_dir}",
        "data.symbolic_train_size=20",
        "data.symbolic_test_size=4",
        "sft.trainer.max_steps=2",
        "sft.lora.r=4",
        "rollouts.num_questions=4",
        "rollouts.max_new_tokens=16",
        "preferences.min_margin=0.0",
        "rl.dpo.max_steps=2",
        "rl.dpo.learning_rate=0.05",
        "rl.num_questions=2",
        "rl.grpo.max_steps=2",
        "rl.grpo.max_completion_length=8",
        "rl.grpo.learning_rate=0.05",
        "rl.rloo.max_steps=2",
        "rl.rloo.max_completion_length=8",
        "rl.rloo.learning_rate=0.05",
        *extra,
    ]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("rl")
    for stage in ("prepare-data", "sft", "collect-rollouts", "build-preferences"):
        run_looper(stage, *args(tmp, tiny_model_dir), cwd=REPO)
    return tmp


def _lora(path: Path) -> dict[str, torch.Tensor]:
    return {k.replace(".default", ""): v for k, v in load_file(path / "adapter_model.safetensors").items()}


def _fresh_copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src / "demo", dst / "demo")
    return dst


def _answer_bias(tiny_model_dir: Path, algorithm: str) -> list[str]:
    """A random model never writes '#### N', so every completion would get the same reward and the
    advantage would be zero. Biasing generation (TRL's generation_kwargs -> sequence_bias) towards
    '####' and digits makes some completions carry answers, so rewards differ within a group."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    hashes = tok.encode("####", add_special_tokens=False)
    digits = [tok.encode(d, add_special_tokens=False) for d in "123456789"]
    bias = [[hashes, 9.0]] + [[d, 8.0] for d in digits] + [[tok.encode(" ", add_special_tokens=False), 8.0]]
    return [f"rl.{algorithm}.generation_kwargs={{sequence_bias: {bias}}}", f"rl.{algorithm}.max_completion_length=12"]


@pytest.mark.parametrize("algorithm", ["dpo", "grpo", "rloo"])
def test_rl_trains_the_sft_adapter(sft_run, tiny_model_dir, tmp_path, algorithm):
    run_dir = _fresh_copy(sft_run, tmp_path)
    extra = _answer_bias(tiny_model_dir, algorithm) if algorithm != "dpo" else []
    run_looper("train-rl", *args(run_dir, tiny_model_dir, f"rl.algorithm={algorithm}", *extra), cwd=REPO)
    sft, rl = _lora(run_dir / "demo" / "checkpoints" / "lora_sft"), _lora(run_dir / "demo" / "checkpoints" / "lora_rl")
    assert set(sft) == set(rl)  # the RL adapter is the SFT adapter trained further: loads on the base alone
    assert any(not torch.equal(sft[k], rl[k]) for k in sft), "RL did not change the adapter"
    assert not (run_dir / "demo" / "checkpoints" / "lora_rl" / "ref").exists()  # the frozen DPO reference is not saved
    logs = [r for r in read_jsonl(run_dir / "demo" / "logs" / "train-rl.jsonl") if "loss" in r]
    assert logs and all(math.isfinite(r["loss"]) for r in logs)
    if algorithm == "dpo":
        assert all(math.isfinite(r["rewards/margins"]) and 0 <= r["rewards/accuracies"] <= 1 for r in logs)
        return
    # TRL's logged reward is the Regime W reward: sum_k w_k x part_k with the config's coefficients, each part in range
    w = load_config(REPO / "configs" / "demo.yaml").regime_w
    weights = {
        "correct": w.correct_reward,
        "consensus": w.consensus_weight,
        "length": -1.0,
        "missing": -w.missing_penalty,
        "truncated": -w.truncation_penalty,
    }  # rl.truncation: penalize (the default)
    for r in logs:
        parts = {k: r[f"rewards/regime_w_{k}/mean"] for k in weights}
        assert (
            all(0 <= parts[k] <= 1 for k in ("correct", "consensus", "missing", "truncated")) and parts["length"] >= 0
        ), parts
        assert r["reward"] == pytest.approx(sum(weights[k] * parts[k] for k in weights), abs=1e-4), r
    assert any(r["rewards/regime_w_missing/mean"] < 1.0 for r in logs)  # some answers were scored


def test_dpo_two_model_layout(sft_run, tiny_model_dir, tmp_path):
    run_dir = _fresh_copy(sft_run, tmp_path)
    run_looper("train-rl", *args(run_dir, tiny_model_dir, "rl.reference=two_models"), cwd=REPO)
    assert (run_dir / "demo" / "checkpoints" / "lora_rl" / "adapter_model.safetensors").exists()


def test_grpo_divergence_keeps_the_prepared_batch_and_weights(sft_run, tiny_model_dir, tmp_path, monkeypatch):
    """A NaN gradient (injected here at the second step) stops GRPO before the step is applied; the dump holds the
    micro-batches as GRPO's loss saw them (completions, masks, advantages) and the LoRA weights, to replay offline."""
    from transformers import TrainerCallback

    import looper.trainers as trainers
    from looper.config import load_config
    from looper.rl_training import train_rl

    class PoisonSecondStep(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if state.global_step == 1:
                next(p for p in model.parameters() if p.requires_grad).grad.view(-1)[0] = float("nan")

    monkeypatch.setattr(
        trainers, "metrics_callback", lambda path, section=None: PoisonSecondStep()
    )  # runs before the watch
    run_dir = _fresh_copy(sft_run, tmp_path)
    config = load_config(REPO / "configs" / "demo.yaml", args(run_dir, tiny_model_dir, "rl.algorithm=grpo")[1:])
    with pytest.raises(trainers.TrainingDiverged, match="non-finite gradients at step 2"):
        train_rl.main(config)
    dump = torch.load(run_dir / "demo" / "work" / "train-rl" / "diverged_step2.pt", weights_only=False)
    inputs = dump["micro_batches"][0]["inputs"]
    assert {"prompt_ids", "completion_ids", "completion_mask", "advantages"} <= set(inputs)
    assert dump["trainable"] and all("lora_" in name for name in dump["trainable"])
    assert not (run_dir / "demo" / "checkpoints" / "lora_rl").exists()
    # the replay rebuilds the trainer, loads the weights and runs GRPO's own loss on each micro-batch: the batch itself
    # was fine (the NaN was injected after the backward), so it does not reproduce
    import subprocess
    import sys

    cmd = [
        sys.executable,
        str(REPO / "scripts" / "replay_diverged_step.py"),
        *args(run_dir, tiny_model_dir, "rl.algorithm=grpo"),
        "--dump",
        str(run_dir / "demo" / "work" / "train-rl" / "diverged_step2.pt"),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "step 2:" in proc.stdout and "micro-batch 1:" in proc.stdout and "advantages:" in proc.stdout
    assert "loss " in proc.stdout and proc.stdout.rstrip().endswith("finite loss and gradients here")


def test_regime_w_reward_functions_sum_to_the_reward():
    from looper.config import RunConfig
    from looper.regime_w.reward import ArmOutput, trajectory_rewards
    from looper.rl_training.train_rl import RegimeWRewards

    config = RunConfig()
    rw = RegimeWRewards(config, max_completion_length=50, end_ids=[0])
    completions = ["2 + 2 = 4\n#### 4", "#### 5", "no idea", "#### 4"]
    ids = [[1] * 10 + [0], [1] * 50, [1] * 50, [1] * 20 + [0]]
    kw = dict(
        completion_ids=ids,
        id=["q"] * 4,
        gold=["4"] * 4,
        arm=["a", "b", "c", "d"],
        family=["compute", "reflective", "compute", "reflective"],
    )
    parts = [f(prompts=[""] * 4, completions=completions, **kw) for f in rw.functions()]
    total = [sum(w * p[i] for w, p in zip(rw.weights, parts)) for i in range(4)]
    outs = [
        ArmOutput(a, f, c, len(i), len(i) >= 50 and i[-1] != 0)
        for a, f, c, i in zip(kw["arm"], kw["family"], completions, ids)
    ]
    _, expected = trajectory_rewards(outs, "4", config.regime_w)
    assert total == pytest.approx([r.reward for r in expected])


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_online_regime_w_is_refused_on_several_processes(tmp_path, tiny_model_dir, monkeypatch, algorithm):
    """Issue 44: under accelerate launch each process would score only part of a question's multi-arm group."""
    from looper.errors import ConfigValueError
    from looper.rl_training import train_rl

    config = load_config(
        REPO / "configs" / "demo.yaml", args(tmp_path, tiny_model_dir, f"rl.algorithm={algorithm}")[1:]
    )
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigValueError, match=f"rl.algorithm={algorithm} under 2 processes: .* in pieces"):
        train_rl.main(config)
    assert not (tmp_path / "demo").exists()


@pytest.mark.long
def test_train_rl_bad_inputs(tmp_path, tiny_model_dir):
    run_looper("prepare-data", *args(tmp_path, tiny_model_dir), cwd=REPO)
    proc = run_looper("train-rl", *args(tmp_path, tiny_model_dir), cwd=REPO, check=False)
    assert proc.returncode != 0 and "run `looper build-preferences` first" in proc.stderr
    proc = run_looper("train-rl", *args(tmp_path, tiny_model_dir, "rl.algorithm=grpo"), cwd=REPO, check=False)
    assert proc.returncode != 0 and "no SFT adapter" in proc.stderr
    (tmp_path / "demo" / "data").mkdir(exist_ok=True)
    (tmp_path / "demo" / "data" / "preferences.jsonl").write_text("")
    proc = run_looper("train-rl", *args(tmp_path, tiny_model_dir), cwd=REPO, check=False)
    assert proc.returncode != 0 and "empty" in proc.stderr


def test_adapter_on_a_different_base_model_is_refused(sft_run, tiny_model_dir, real_tokenizer_dir, tmp_path):
    """An SFT adapter trained on one base must not be loaded onto another: shapes that would not line up, and (issue
    44, PEFT #1932) another base of the same shape, refused by `looper eval` as a user runs it."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from conftest import tiny_llama

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    other = tmp_path / "other-base"
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ).save_pretrained(other)
    tok.save_pretrained(other)
    run_dir = _fresh_copy(sft_run, tmp_path / "runs")
    proc = run_looper("train-rl", *args(run_dir, other), cwd=REPO, check=False)
    assert proc.returncode != 0 and "trained on a different base model" in proc.stderr
    same_shape = tiny_llama(real_tokenizer_dir, tmp_path / "other-seed", seed=1)
    proc = run_looper(
        "eval",
        *args(run_dir, same_shape, "eval.models=[sft]", "eval.limit=2", "eval.max_new_tokens=4"),
        cwd=REPO,
        check=False,
    )
    refusal = [line for line in proc.stderr.splitlines() if "lora_sft: adapter was trained on base" in line]
    assert proc.returncode != 0 and len(refusal) == 1 and "a different model of the same shape" in refusal[0]


R1_STYLE_TEMPLATE = (  # what DeepSeek-R1's template does that matters here: assistant turns keep only what follows
    # </think>, and the generation prompt opens a <think> block
    "{% for m in messages %}{% set c = m['content'] %}{% if m['role'] == 'assistant' and '</think>' in c %}"
    "{% set c = c.split('</think>')[-1] %}{% endif %}<|{{ m['role'] }}|>{{ c }}{% if m['role'] == 'assistant' %}"
    "<|im_end|>{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}"
)


def test_dpo_trains_on_the_whole_reasoning_under_a_reasoning_template(tmp_path, tiny_model_dir):
    """Pairs reach TRL as text (the prompt as generation saw it, the answers verbatim), so a template that drops an
    assistant message's reasoning cannot turn DPO into a comparison of bare final answers."""
    import json
    import shutil

    from transformers import AutoTokenizer

    from looper.config import load_config
    from looper.prompts import question_prompt
    from looper.rl_training.train_rl import dpo_dataset
    from looper.runs import RunDir

    model = tmp_path / "r1-like"
    shutil.copytree(tiny_model_dir, model)
    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = R1_STYLE_TEMPLATE
    tok.save_pretrained(model)
    config = load_config("configs/demo.yaml", [f"runs_dir={tmp_path}", f"model.name_or_path={model}"])
    run = RunDir.of(config)
    run.preferences.parent.mkdir(parents=True)
    better, worse = "Half of 14 is 7.\n</think>\n#### 7", "14 halves... wait.\n</think>\n#### 8"
    prompt = question_prompt("What is half of 14?", config.model.system_prompt, "chat")
    run.preferences.write_text(
        json.dumps(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": better}],
                "rejected": [{"role": "assistant", "content": worse}],
                "better": better,
                "worse": worse,
            }
        )
        + "\n"
    )
    row = dpo_dataset(config, run)[0]
    assert row["prompt"].endswith("<|assistant|><think>\n") and "What is half of 14?" in row["prompt"]
    assert row["chosen"] == better and row["rejected"] == worse  # the reasoning is kept; TRL appends the end token
    # what message form would have trained on: the bare answers
    assert tok.apply_chat_template([*prompt, {"role": "assistant", "content": better}], tokenize=False).endswith(
        "<|assistant|>\n#### 7<|im_end|>"
    )


def test_chat_user_format_puts_the_instruction_in_the_user_turn(tiny_model_dir):
    """prompt_format chat_user (DeepSeek's advice for R1): no system message; the instruction opens the user turn, in
    every stage's prompt (SFT examples, generation, preference / GRPO prompts)."""
    from transformers import AutoTokenizer

    from looper.prompts import question_prompt, render_prompt, sft_example

    messages = question_prompt(" What is 6 x 7? ", "Answer as '#### N'.", "chat_user")
    assert messages == [{"role": "user", "content": "Answer as '#### N'.\n\nWhat is 6 x 7?"}]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = R1_STYLE_TEMPLATE
    text = render_prompt(tok, "What is 6 x 7?", "Answer as '#### N'.", "chat_user")
    assert sft_example(tok, "What is 6 x 7?", "42 #### 42", "Answer as '#### N'.", "chat_user")["prompt"] == text
    assert text == "<|user|>Answer as '#### N'.\n\nWhat is 6 x 7?<|assistant|><think>\n" and "<|system|>" not in text
    assert "<|system|>Answer" in render_prompt(tok, "What is 6 x 7?", "Answer as '#### N'.", "chat")


def test_an_adapter_missing_tensors_is_refused(tiny_model_dir, tmp_path):
    """Issue 44 (PEFT #2115): an adapter file without half its tensors loaded with only a warning, those layers the base."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from looper.errors import InputError
    from looper.modeling import attach_adapter

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp_path / "adapter")
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    tensors = load_file(weights)
    attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")  # whole: loads
    save_file({k: v for k, v in tensors.items() if "v_proj" not in k}, weights)
    with pytest.raises(InputError, match=r"adapter: the adapter file lacks \d+ of its \d+ tensors \(e.g. .*v_proj"):
        attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")


def test_an_adapter_is_refused_on_another_base_of_the_same_shape(tiny_model_dir, real_tokenizer_dir, tmp_path):
    """Issue 44 (PEFT #1932): an adapter trained on one base was applied to another of the same shape without a word.
    Its record names the base's weights (a fingerprint of its safetensors files), compared where the base is a model
    in memory (attach_adapter: hf engine, training) and where it is only files (vLLM's LoRA path reads its config)."""
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoTokenizer

    from conftest import tiny_llama
    from looper.config import ModelConfig
    from looper.errors import InputError
    from looper.modeling import architecture_signature, attach_adapter, check_adapter_base, load_model
    from looper.trainers import save_atomically

    other = tiny_llama(real_tokenizer_dir, tmp_path / "other-seed", seed=1)  # the same shape, other weights
    mine, theirs = AutoConfig.from_pretrained(tiny_model_dir), AutoConfig.from_pretrained(other)
    assert architecture_signature(mine) == architecture_signature(theirs)  # the shape check alone lets it through
    base = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32")
    adapter = tmp_path / "lora_sft"
    lora = get_peft_model(
        load_model(base), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    save_atomically(lora, AutoTokenizer.from_pretrained(tiny_model_dir), adapter, {"base_model": str(tiny_model_dir)})
    record = json.loads((adapter / "looper_adapter.json").read_text())
    assert record["base_fingerprint"].startswith("sha256:") and record["base_checkpoint"] == str(tiny_model_dir)

    attach_adapter(load_model(base), adapter)  # its own base: accepted
    check_adapter_base(adapter, mine)
    refused = (
        rf"lora_sft: adapter was trained on base {tiny_model_dir} \(weights sha256:\w+\), not on {other} "
        r"\(weights sha256:\w+\), a different model of the same shape; set model.name_or_path to the base"
    )
    with pytest.raises(InputError, match=refused):
        attach_adapter(load_model(ModelConfig(name_or_path=str(other), dtype="float32")), adapter)
    with pytest.raises(InputError, match=refused):
        check_adapter_base(adapter, theirs)

    # a record written before bases were fingerprinted: the shape is all it can be checked against, so it loads
    del record["base_fingerprint"]
    (adapter / "looper_adapter.json").write_text(json.dumps(record))
    attach_adapter(load_model(ModelConfig(name_or_path=str(other), dtype="float32")), adapter)


def test_random_reward_pairs_are_seeded_draws_that_ignore_the_answers():
    """preferences.random_rewards (the random-reward control): each trajectory's reward is a draw from the seed and
    the question id, the same on every run, another under another seed, whatever the answers; correct stays gold's
    (reported, not used). Two rankings at once, or require_correct_chosen with it, are refused at load (so a pipeline
    stops before its first stage), naming the fields."""
    from looper.config import ConfigError, load_config
    from looper.rl_training.build_preferences import ranking

    def traj(correct: float) -> dict:
        return {"parts": {"correct": correct}, "reward": 1.0 + correct, "truncated": False}

    record = {"id": "q1", "trajectories": [traj(1.0), traj(0.0), traj(1.0), traj(0.0)]}
    config = load_config("configs/demo.yaml", ["preferences.random_rewards=true"])
    rewards, correct = ranking(record, config)
    assert correct == [True, False, True, False] and all(0 <= r < 1 for r in rewards)
    assert ranking(record, config)[0] == rewards  # seeded: the same pairs on a rerun
    assert ranking({**record, "id": "q2"}, config)[0] != rewards
    assert (
        ranking(record, load_config("configs/demo.yaml", ["preferences.random_rewards=true", "seed=7"]))[0] != rewards
    )
    assert ranking(record, load_config("configs/demo.yaml", []))[0] == [2.0, 1.0, 2.0, 1.0]  # Regime W's, as saved
    for overrides, fields in (
        (
            ["preferences.require_correct_chosen=true"],
            ("preferences.require_correct_chosen", "preferences.random_rewards"),
        ),
        (["preferences.correctness_only=true"], ("preferences.correctness_only", "preferences.random_rewards")),
    ):
        with pytest.raises(ConfigError) as err:
            load_config("configs/demo.yaml", ["preferences.random_rewards=true", *overrides])
        assert err.value.fields == fields
