"""Figure data: compact per-(model, prompt) payloads that the browser turns into Plotly figures.

Pages carry numbers, not markup: flat integer arrays with a fixed scale (probabilities in
units of 1e-4, nats in units of 1e-3) plus a small ``vocab`` of the ids shown. Hover text,
cell text and the metric switch are built in the browser (assets/lensreport.js), so a figure
of 64 tokens × 31 layers stays far below 150 KB. All strings reach Plotly through one
escaping function in the browser; here they are only JSON.

A lens need not cover every row (the Jacobian lens has nothing for the embeddings row): a
document then lists its covered rows in ``lens.rows`` and an uncovered row is a single null
in each per-row field. Payloads write such a row out as nulls of the row's full shape (the
flat arrays keep their layout) and carry ``rows`` and ``gap_text``; the browser draws blank
cells and gaps there, never another lens's numbers.

Log scales: probabilities as small as 1e-13 are all 0 in units of 1e-4, so the log-probability
metrics get their own fields (``*_logp``: log10 of the probability in units of 0.01, floored
at LOG_FLOOR). Token groups (``groups``) carry, per cell, the summed probability, its log,
the best rank and the group's most likely members (``top``: indexes into the group's ``ids``,
``top_probs``: their probabilities). Chat prompts carry ``template_mask`` (true where a token
is the chat template's) and generated ones ``generated_from`` (first generated position).
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..lens.kinds import lens_style

PROB_SCALE = 10_000
NATS_SCALE = 1_000
LOG_SCALE = 100  # log10 probabilities in units of 0.01
LOG_FLOOR = -40.0  # log10 of a probability that underflowed to 0 (float32 stops near 1e-45)
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


def _log10(rows: Any) -> Any:
    """The same nesting with each probability as its log10 (None stays None)."""
    if isinstance(rows, list):
        return [_log10(item) for item in rows]
    return None if rows is None else (math.log10(rows) if rows > 0 else LOG_FLOOR)


def covered_rows(document: dict[str, Any]) -> list[int]:
    """The rows the document's lens covers, ascending (every row when ``lens.rows`` is absent)."""
    rows = document["lens"].get("rows")
    return list(range(len(document["layers"]))) if rows is None else list(rows)


def _blank(shape: tuple[int, ...]) -> Any:
    return None if not shape else [_blank(shape[1:]) for _ in range(shape[0])]


def _dense(rows: list[Any], shape: tuple[int, ...]) -> list[Any]:
    """A per-row field with each uncovered row (a single null) written out as nulls of
    ``shape`` (the shape of one row), so flat arrays keep their [layer][position] layout."""
    return [_blank(shape) if row is None else row for row in rows]


def gap_text(kind: str) -> str:
    """What a page says at a row that lens ``kind`` does not cover (instead of any number)."""
    return f"no {lens_style(kind)['label']} reading for this row"


def _lens_fields(document: dict[str, Any]) -> dict[str, Any]:
    """How the page names the lens, and which rows it covers (only when not every row)."""
    style = lens_style(document["lens"]["kind"])
    fields: dict[str, Any] = {"lens_style": style}
    if document["lens"].get("rows") is not None:
        fields["rows"] = covered_rows(document)
        fields["gap_text"] = gap_text(document["lens"]["kind"])
    return fields


def summary(document: dict[str, Any]) -> dict[str, Any]:
    """What the model predicts after the prompt, and from which layer on it is the top guess."""
    last_layer = len(document["layers"]) - 1
    position = last_prompt_position(document)
    # None for a row the lens does not cover: such rows are skipped, never counted as agreeing
    # or disagreeing (the settled layer is the lowest covered row from which every covered row
    # up to the output agrees).
    top1 = [None if layer is None else layer[position][0] for layer in document["topk_ids"]]
    answer = top1[last_layer]
    first = next(i for i, token in enumerate(top1) if token == answer)
    settled = last_layer
    for row in range(last_layer - 1, -1, -1):
        if top1[row] is None:
            continue
        if top1[row] != answer:
            break
        settled = row
    return {
        "answer": document["vocab"][str(answer)],
        "probability": document["topk_probs"][last_layer][position][0],
        "first_layer": first,
        "settled_layer": settled,
        "num_layers": last_layer,  # L blocks; rows are 0 … L
    }


def last_prompt_position(document: dict[str, Any]) -> int:
    """The prompt's last position: where the model predicts what follows the prompt (the
    token before any generated text; the last token when nothing was generated)."""
    start = document.get("generated_from")
    return len(document["input_ids"]) - 1 if start is None else start - 1


def _display_fields(document: dict[str, Any]) -> dict[str, Any]:
    """Which positions are the chat template's and from which one the text is generated
    (only where the document has them: plain prompts' payloads are unchanged)."""
    fields: dict[str, Any] = {}
    if document.get("generated_from") is not None:
        fields["generated_from"] = document["generated_from"]
    if document.get("template_mask") is not None:
        fields["template_mask"] = document["template_mask"]
    return fields


def display_notes(document: dict[str, Any]) -> dict[str, Any]:
    """What a figure's page says about its tokens: the chat messages, whether some tokens are
    the chat template's (dimmed), the token groups, and the generated continuation (from
    ``generated_from`` on)."""
    start = document.get("generated_from")
    mask = document.get("template_mask")
    tokens = document.get("input_tokens") or [document["vocab"][str(i)]
                                              for i in document["input_ids"]]
    messages = document["prompt"].get("messages")
    return {"template": bool(mask) and any(mask),
            "messages": None if not messages else [(m["role"], m["content"]) for m in messages],
            "groups": [group["name"] for group in document.get("target_groups") or []],
            "generated_from": start,
            "generated": None if start is None else len(tokens) - start,
            "generated_text": None if start is None else "".join(tokens[start:])}


def _groups(document: dict[str, Any], length: int) -> list[dict[str, Any]]:
    """Each token group's per-cell numbers as flat arrays [layer][position] (members:
    [layer][position][m])."""
    out = []
    for group in document.get("target_groups") or []:
        ids = list(group["ids"])
        covered = [row for row in group["top_ids"] if row is not None]
        m = len(covered[0][0]) if covered and covered[0] else 0
        index = {token: j for j, token in enumerate(ids)}
        top = [None if row is None else [[index[token] for token in cell] for cell in row]
               for row in group["top_ids"]]
        out.append({
            "name": group["name"], "ids": ids, "m": m,
            "prob": _flat(_dense(group["prob"], (length,)), PROB_SCALE),
            "logp": _flat(_dense(_log10(group["prob"]), (length,)), LOG_SCALE),
            "rank": _flat_ints(_dense(group["rank"], (length,))),
            "top": _flat_ints(_dense(top, (length, m))),
            "top_probs": _flat(_dense(group["top_probs"], (length, m)), PROB_SCALE),
        })
    return out


def is_long(document: dict[str, Any]) -> bool:
    return len(document["layers"]) * len(document["input_ids"]) > LIGHT_CELLS


def first_view(document: dict[str, Any], figure_id: str) -> dict[str, Any]:
    """What a long prompt's page needs to draw at once: entropy and the top-1 token (id and
    probability) per cell, as a k = 1 payload marked ``partial``."""
    layers = len(document["layers"])
    length = len(document["input_ids"])
    top1 = [None if row is None else [cell[0] for cell in row] for row in document["topk_ids"]]
    top1_probs = [None if row is None else [cell[0] for cell in row]
                  for row in document["topk_probs"]]
    used = {str(i) for i in document["input_ids"]}
    used.update(str(i) for row in top1 if row is not None for i in row)
    prompt = document["prompt"]
    return {
        "id": figure_id, "model": document["model"]["name"], "prompt": prompt["name"],
        "layers": layers, "length": length, "k": 1, "partial": True,
        "input_ids": document["input_ids"],
        "topk_ids": _flat_ints(_dense(top1, (length,))),
        "topk_probs": _flat(_dense(top1_probs, (length,)), PROB_SCALE),
        "entropy": _flat(_dense(document["entropy"], (length,)), NATS_SCALE),
        "target_id": prompt.get("target_id"), "target": prompt.get("target_token"),
        **_lens_fields(document), **_display_fields(document),
        "vocab": {key: document["vocab"][key] for key in sorted(used, key=int)},
    }


def payload(document: dict[str, Any], figure_id: str, with_tracks: bool = True
            ) -> dict[str, Any]:
    """The figure's data for the browser (see lensreport.js for how it is read)."""
    layers = len(document["layers"])
    length = len(document["input_ids"])
    top_k = len(document["topk_ids"][covered_rows(document)[-1]][0])
    row = (length,)

    def grid(field: str, scale: int, shape: tuple[int, ...] = row) -> list[int | None]:
        return _flat(_dense(document[field], shape), scale)

    used = {str(i) for i in document["input_ids"]}
    used.update(str(i) for i in _flat_ints(document["topk_ids"]) if i is not None)
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
        "topk_ids": grid("topk_ids", 1, (length, top_k)),
        "topk_probs": grid("topk_probs", PROB_SCALE, (length, top_k)),
        "entropy": grid("entropy", NATS_SCALE),
        "kl_to_final": grid("kl_to_final", NATS_SCALE),
        "next_token_prob": grid("next_token_prob", PROB_SCALE),
        "next_token_rank": grid("next_token_rank", 1),
        "next_token_logp": _flat(_dense(_log10(document["next_token_prob"]), row), LOG_SCALE),
        "vocab_size": document["model"].get("vocab_size"),
        "target_id": prompt.get("target_id"),
        "target": prompt.get("target_token"),
        **_lens_fields(document),
        **_display_fields(document),
    }
    if document.get("target_prob") is not None:
        data["target_prob"] = grid("target_prob", PROB_SCALE)
        data["target_rank"] = grid("target_rank", 1)
        data["target_logp"] = _flat(_dense(_log10(document["target_prob"]), row), LOG_SCALE)
    groups = _groups(document, length)
    if groups:
        data["groups"] = groups
        for group in groups:
            used.update(str(i) for i in group["ids"])
    if with_tracks:
        data["tracked_ids"] = document["tracked_ids"]
        data["tracked_probs"] = [_flat(_dense(probs, (len(ids),)), PROB_SCALE)
                                 for ids, probs in zip(document["tracked_ids"],
                                                       document["tracked_probs"])]
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
