"""How long a prompt a model takes here (its context, and memory), and its tokenizer and
config without its weights: what prompt checks need before any weights load."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import LensReportError
from ..results.concurrency import being_written
from .loading import (ModelRequest, _load_failure, _max_context, load_tokenizer, text_config,
                      weights_cache_folder)
from .references import ResolvedModel, hub_reachable

log = logging.getLogger("lensreport")

# The hidden states of all layers, and a few working copies, must fit well within memory.
MEMORY_FRACTION = 0.25


def available_memory(device: str = "cpu") -> int:
    """Bytes free now where the hidden states live: the GPU's memory on CUDA, else host RAM."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    import psutil

    return int(psutil.virtual_memory().available)


def prompt_limit(max_context: int | None, num_layers: int | None, hidden_size: int | None,
                 device: str = "cpu") -> int:
    """Longest prompt a model takes here: its context, and what memory allows for the hidden
    states of every layer (float32, with working copies) on the device that holds them."""
    per_token = ((num_layers or 1) + 1) * (hidden_size or 4096) * 4 * 4
    by_memory = int(available_memory(device) * MEMORY_FRACTION // per_token)
    return min(max_context or by_memory, by_memory)


def tokenizer_and_config(spec: ModelRequest, resolved: ResolvedModel) -> tuple[Any, Any] | None:
    """The tokenizer and config of a model without its weights; None where that would cost
    as much as loading (a chunked package not assembled yet)."""
    from transformers import AutoConfig

    kwargs: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    location = resolved.location
    if resolved.kind == "hub":
        kwargs["revision"] = spec.revision
        kwargs["local_files_only"] = not hub_reachable()
    elif resolved.kind == "gguf":
        converted = weights_cache_folder(resolved)
        if (converted / "config.json").is_file():
            location = str(converted)
        elif being_written(converted):
            return None  # another process converts it: the load checks (parsing costs more)
        elif (Path(resolved.location) / (resolved.gguf_file or "")).is_file():
            kwargs["gguf_file"] = resolved.gguf_file
        else:
            return None
    try:
        return (load_tokenizer(location, **kwargs),
                AutoConfig.from_pretrained(location, **kwargs))
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        raise LensReportError(_load_failure(spec, resolved, exc)) from exc


def text_config_limit(config: Any, device_kind: str) -> int:
    """Longest prompt for a model's config (its text config where it has one) here."""
    text = text_config(config)
    return prompt_limit(_max_context(text), getattr(text, "num_hidden_layers", None),
                        getattr(text, "hidden_size", None),
                        "cuda" if device_kind == "cuda" else "cpu")
