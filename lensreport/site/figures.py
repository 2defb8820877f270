"""Figure data: compact per-(model, prompt) payloads that the browser turns into Plotly figures.

Pages carry numbers, not markup: flat integer arrays with a fixed scale (probabilities in
units of 1e-4, nats in units of 1e-3) plus a small ``vocab`` of the ids shown. Hover text,
cell text and the metric switch are built in the browser (assets/lensreport.js), so a figure
of 64 tokens × 31 layers stays far below 150 KB. All strings reach Plotly through one
escaping function in the browser; here they are only JSON.
"""

from __future__ import annotations

import json
from typing import Any

from ..lens.kinds import lens_style

PROB_SCALE = 10_000
NATS_SCALE = 1_000
# Above this many cells (layers × tokens) a page carries only the first view (entropy and
# the top-1 token per cell); the rest is fetched from data/<model>/<prompt>.figure.json.
LIGHT_CELLS = 4096


def _flat(rows: Any, scale: int) -> list[int | None]:
    out: list[int | None] = []

    def walk(value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                walk(item)
        else:
            out.append(None if value is None else int(round(value * scale)))

    walk(rows)
    return out


def _flat_ints(rows: Any) -> list[int | None]:
    return _flat(rows, 1)


def summary(document: dict[str, Any]) -> dict[str, Any]:
    """What the model predicts after the prompt, and from which layer on it is the top guess."""
    last_layer = len(document["layers"]) - 1
    top1 = [layer[-1][0] for layer in document["topk_ids"]]
    answer = top1[last_layer]
    first = next(i for i, token in enumerate(top1) if token == answer)
    settled = last_layer
    while settled > 0 and top1[settled - 1] == answer:
        settled -= 1
    return {
        "answer": document["vocab"][str(answer)],
        "probability": document["topk_probs"][last_layer][-1][0],
        "first_layer": first,
        "settled_layer": settled,
        "num_layers": last_layer,  # L blocks; rows are 0 … L
    }


def is_long(document: dict[str, Any]) -> bool:
    return len(document["layers"]) * len(document["input_ids"]) > LIGHT_CELLS


def first_view(document: dict[str, Any], figure_id: str) -> dict[str, Any]:
    """What a long prompt's page needs to draw at once: entropy and the top-1 token (id and
    probability) per cell, as a k = 1 payload marked ``partial``."""
    layers = len(document["layers"])
    length = len(document["input_ids"])
    top1 = [[cell[0] for cell in row] for row in document["topk_ids"]]
    used = {str(i) for i in document["input_ids"]}
    used.update(str(i) for row in top1 for i in row)
    prompt = document["prompt"]
    return {
        "id": figure_id, "model": document["model"]["name"], "prompt": prompt["name"],
        "layers": layers, "length": length, "k": 1, "partial": True,
        "input_ids": document["input_ids"],
        "topk_ids": _flat_ints(top1),
        "topk_probs": _flat([[cell[0] for cell in row] for row in document["topk_probs"]],
                            PROB_SCALE),
        "entropy": _flat(document["entropy"], NATS_SCALE),
        "target_id": prompt.get("target_id"), "target": prompt.get("target_token"),
        "lens_style": lens_style(document["lens"]["kind"]),
        "vocab": {key: document["vocab"][key] for key in sorted(used, key=int)},
    }


def payload(document: dict[str, Any], figure_id: str, with_tracks: bool = True
            ) -> dict[str, Any]:
    """The figure's data for the browser (see lensreport.js for how it is read)."""
    layers = len(document["layers"])
    length = len(document["input_ids"])
    top_k = len(document["topk_ids"][0][0])
    used = {str(i) for i in document["input_ids"]}
    used.update(str(i) for i in _flat_ints(document["topk_ids"]))
    prompt = document["prompt"]
    if prompt.get("target_id") is not None:
        used.add(str(prompt["target_id"]))
    data: dict[str, Any] = {
        "id": figure_id,
        "model": document["model"]["name"],
        "prompt": prompt["name"],
        "layers": layers,
        "length": length,
        "k": top_k,
        "input_ids": document["input_ids"],
        "topk_ids": _flat_ints(document["topk_ids"]),
        "topk_probs": _flat(document["topk_probs"], PROB_SCALE),
        "entropy": _flat(document["entropy"], NATS_SCALE),
        "kl_to_final": _flat(document["kl_to_final"], NATS_SCALE),
        "next_token_prob": _flat(document["next_token_prob"], PROB_SCALE),
        "next_token_rank": _flat_ints(document["next_token_rank"]),
        "target_id": prompt.get("target_id"),
        "target": prompt.get("target_token"),
        "lens_style": lens_style(document["lens"]["kind"]),
    }
    if document.get("target_prob") is not None:
        data["target_prob"] = _flat(document["target_prob"], PROB_SCALE)
        data["target_rank"] = _flat_ints(document["target_rank"])
    if with_tracks:
        data["tracked_ids"] = document["tracked_ids"]
        data["tracked_probs"] = [_flat(probs, PROB_SCALE) for probs in document["tracked_probs"]]
        for ids in document["tracked_ids"]:
            used.update(str(i) for i in ids)
    data["vocab"] = {key: document["vocab"][key] for key in sorted(used, key=int)}
    return data


def script_json(value: Any) -> str:
    """JSON safe inside <script type="application/json">: no '<', '>', '&' or line separators
    can end the element or change how it parses."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
