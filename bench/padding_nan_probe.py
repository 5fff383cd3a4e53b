"""Does a left-padded batch (GRPO's layout: left-padded prompts + right-padded completions) give NaN gradients?

    python bench/padding_nan_probe.py          # SmolLM2-135M's shape, random weights, LoRA r=64, bf16; 20 batches of 64 on CUDA
    python bench/padding_nan_probe.py small    # 2 layers (a CPU check of the script)

A one-off probe for GRPO's divergence (docs/results.md, "Second comparison"): forward + backward through sdpa and
eager attention, printing the loss, the gradient norm and whether hidden states at padded positions are NaN.
"""

import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

dev = "cuda" if torch.cuda.is_available() else "cpu"
small = len(sys.argv) > 1 and sys.argv[1] == "small"
cfg = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30 if not small else 2,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    rope_theta=100000,
)
print(torch.__version__, dev, flush=True)
for impl in ("sdpa", "eager"):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**cfg, attn_implementation=impl)).to(dev, torch.bfloat16)
    model = get_peft_model(
        model,
        LoraConfig(
            r=64,
            lora_alpha=16,
            lora_dropout=0.05,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
    )
    model.train()
    bad = 0
    trials = 20 if dev == "cuda" else 2
    for t in range(trials):
        g = torch.Generator().manual_seed(t)
        B = 64 if dev == "cuda" else 4
        plen = torch.randint(60, 200, (B,), generator=g)
        clen = torch.randint(10, 257, (B,), generator=g)
        P, C = int(plen.max()), int(clen.max())
        ids = torch.randint(0, 49152, (B, P + C), generator=g)
        mask = torch.zeros(B, P + C, dtype=torch.long)
        for i in range(B):
            mask[i, P - plen[i] : P] = 1
            mask[i, P : P + clen[i]] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hs = out.hidden_states[-1].float()
        pad_nan = torch.isnan(hs[mask == 0]).any().item()
        logits = out.logits[:, P - 1 : -1].float()
        logps = torch.gather(logits.log_softmax(-1), 2, ids[:, P:].unsqueeze(-1)).squeeze(-1)
        cm = mask[:, P:].float()
        loss = -(logps * cm).sum() / cm.sum()
        model.zero_grad()
        loss.backward()
        gn = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in model.parameters() if p.grad is not None)).item()
        bad += not (gn == gn)
        print(
            f"{impl} trial {t}: loss {loss.item():.3f} finite {torch.isfinite(loss).item()} grad_norm {gn:.4f} NaN at pad positions {pad_nan}",
            flush=True,
        )
    print(f"== {impl}: {bad}/{trials} NaN grad norms", flush=True)
    del model
    if dev == "cuda":
        torch.cuda.empty_cache()
