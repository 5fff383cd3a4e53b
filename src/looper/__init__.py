"""looper: teach a reasoning LLM grade-school math (SFT, Regime W rollouts, DPO/GRPO) and evaluate it."""

__version__ = "0.1.0"
