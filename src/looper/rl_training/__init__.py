"""Stages 4-6: rollout collection, preference pairs, and RL (DPO, GRPO, RLOO) on top of SFT."""
