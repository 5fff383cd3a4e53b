"""Stage 1-2: data preparation and supervised fine-tuning (the plan's baseline: docs/plan.md §1-§2)."""
