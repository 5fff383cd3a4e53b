"""Regime W: eight arms, agreement scores (s_end, s_path, s_cf, s_wm) and per-trajectory rewards."""
