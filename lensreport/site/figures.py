"""Figure data: what a page inlines for the browser to draw (assets/lensreport.js).

The browser reads results documents as they are in ``data/`` (schema 3, numeric fields
packed: results/documents.py): a page inlines every lens's whole document where that is
cheap, and otherwise each figure's *first view* (:func:`first_view`: entropy and the top-1 token per
cell, itself a document of top-k 1), fetching the whole documents from ``data/`` over HTTP
once the figure is drawn. One reader in the browser, one copy of each run's numbers in the
site. Hover text, cell text and the metric switch are built in the browser; every string
reaches Plotly through one escaping function there, here they are only JSON.

A lens need not cover every row (the Jacobian lens has nothing for the embeddings row): a
document then lists its covered rows in ``lens.rows`` and an uncovered row is a single null
in each per-row field; the browser draws blank cells and gaps there, never another lens's
numbers. The depth comparison of a prompt page (:func:`depth_curves`) is computed here, so
it can show every model of a gallery without any document fetched.
"""

from __future__ import annotations

import json
from typing import Any

from ..lens.kinds import lens_style
from ..results.documents import significant

# Above this many cells (layers × tokens) a page carries only the first view (entropy and
# the top-1 token per cell) and fetches the documents for the rest.
LIGHT_CELLS = 4096


def gap_text(kind: str) -> str:
    """What a page says at a row that lens ``kind`` does not cover (instead of any number)."""
    return f"no {lens_style(kind)['label']} reading for this row"


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
            "generated_text": None if start is None else "".join(tokens[start:]),
            # Why a figure lacks rows after the attention, attribution or heads (one line each).
            "inside": [note for note in (document.get("rows_note"),
                                         document.get("decomposition_note"),
                                         (document.get("decomposition") or {}).get("heads_note"))
                       if note]}


def is_long(document: dict[str, Any]) -> bool:
    return len(document["layers"]) * len(document["input_ids"]) > LIGHT_CELLS


FIRST_VIEW_FIELDS = ("schema_version", "layers", "row_depths", "input_ids", "generated_from",
                     "template_mask")


# The positions a long prompt's heatmap shows at first (lensreport.js WINDOW): its first view
# carries these only; the rest of the row comes with the fetched documents.
FIRST_WINDOW = 120
# A first view's entropy at 2 decimals, as its hover shows it (its colour cannot show more):
# the page's largest inline numbers, a third smaller so.
FIRST_VIEW_CODECS = {"entropy": "fixed2"}


def first_view(document: dict[str, Any]) -> dict[str, Any]:
    """The part of a document a page needs to draw at once: entropy and the top-1 token's id
    (the cell's text; its probability is not drawn until asked for) per cell of the positions
    shown at first (``positions``: the first FIRST_WINDOW of a long prompt), as a document of
    top-k 1 with ``partial`` set (the browser reads it as it reads a whole one, and fetches
    the whole one for the rest)."""
    shown = min(len(document["input_ids"]), FIRST_WINDOW)

    def visible(field: str, cell: Any = lambda value: value) -> list[Any]:
        return [None if row is None else [cell(value) for value in row[:shown]]
                for row in document[field]]

    top1_ids = visible("topk_ids", lambda cell: cell[:1])
    used = {str(i) for i in document["input_ids"]}
    used.update(str(cell[0]) for row in top1_ids if row is not None for cell in row)
    model, prompt, lens = document["model"], document["prompt"], document["lens"]
    # Inlined up to three times a run (prompt, model and embed pages): what the browser
    # reads as its default (a missing field; depths 0 … L, one row per block) is left out.
    default_depths = list(range(len(document["layers"])))
    return {
        **{field: document[field] for field in FIRST_VIEW_FIELDS
           if document.get(field) is not None
           and not (field == "row_depths" and document[field] == default_depths)},
        "partial": True,
        "positions": shown,
        "entropy": visible("entropy"),
        "model": {"name": model["name"], "vocab_size": model.get("vocab_size")},
        "prompt": {"name": prompt["name"], "target_id": prompt.get("target_id"),
                   "target_token": prompt.get("target_token")},
        "lens": {key: lens[key] for key in ("kind", "rows") if key in lens},
        "topk_ids": top1_ids,
        "vocab": {key: document["vocab"][key] for key in sorted(used, key=int)},
    }


def without_tracks(document: dict[str, Any]) -> dict[str, Any]:
    """The document less its tracked tokens (most of its bytes), for a page that draws no
    trajectories (an embed)."""
    return {key: value for key, value in document.items()
            if key not in ("tracked_ids", "tracked_probs")}


def depth_curves(document: dict[str, Any]) -> list[dict[str, Any]]:
    """What the prompt page's depth comparison draws for one lens, at the prompt's last
    position: the probability of the model's final answer at every row (when the answer is
    among that position's tracked tokens) and of each token group (null at uncovered rows)."""
    position = last_prompt_position(document)
    last = len(document["layers"]) - 1
    answer = document["topk_ids"][last][position][0]
    curves = []
    ids = document["tracked_ids"][position]
    if answer in ids:
        j = ids.index(answer)
        curves.append({"curve": "answer", "label": json.dumps(document["vocab"][str(answer)],
                                                              ensure_ascii=False),
                       "y": [None if row is None or row[j] is None else significant(row[j])
                             for row in document["tracked_probs"][position]]})
    for group in document.get("target_groups") or []:
        curves.append({"curve": f"group:{group['name']}", "label": f"P({group['name']})",
                       "y": [None if row is None else row[position] for row in group["prob"]]})
    return curves


def script_json(value: Any) -> str:
    """JSON safe inside <script type="application/json">: no '<', '>', '&' or line separators
    can end the element or change how it parses."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
