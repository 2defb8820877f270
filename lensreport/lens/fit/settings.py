"""Tuned-lens training settings (no torch here: the CLI takes its defaults from them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainSettings:
    tokens: int = 10_000  # training budget: positions whose KL is trained on
    context: int = 256
    tokens_per_step: int = 512
    lr_scale: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-3
    held_out_tokens: int = 1024
    checkpoint_every: int = 5  # steps
    seed: int = 0
