"""Stage 7: evaluation of base / SFT / RL on GSM8K, GSM8K-Platinum and gsm_symbolic."""
