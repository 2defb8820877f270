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


@dataclass(frozen=True)
class JacobianSettings:
    """Jacobian-lens fitting: the reference implementation's estimator and defaults."""

    prompts: int = 64  # corpus documents used (those longer than skip_first + 1 tokens)
    context: int = 128  # each document's first `context` tokens
    skip_first: int = 16  # positions skipped at the start of each prompt
    dim_batch: int = 8  # output dimensions per backward pass
    checkpoint_every: int = 4  # prompts
    shard: tuple[int, int] = (1, 1)  # (K, N): this process fits prompts K-1, K-1+N, …
