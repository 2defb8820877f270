"""CSV of every results JSON: a spreadsheet's view of a run or of a corpus curve.

A run's CSV is a file in data/ only with ``site.csv_files``; otherwise lensreport.js writes
the same bytes from the document when "Download CSV" is clicked (a browser test compares).

A run's CSV has one row per (layer, position), layer-major, ``(L + 1) × T`` rows; a corpus
document's has one row per (row, metric). Values are the JSON's (already rounded); a value
the document does not have — a row the lens does not cover, the next token after the last
position, a target the prompt does not name — is an empty cell.

Token text is data, and a spreadsheet must not run it: a token is as long as its tokenizer
makes it (an added token such as ``=HYPERLINK("http://evil.example/","click")`` is one), so
every text cell is written under the one rule for text (lensreport/text.py: no control,
bidi or invisible character: a tab or carriage return is ⇥ or ␍), and a text cell that a
spreadsheet would read as a formula — one starting with ``=``, ``+``, ``-`` or ``@`` — gets a
leading single quote (``'=`` …), the usual neutralisation (OWASP's "CSV injection"). Only
text columns (tokens, names) are touched: numbers stay numbers. A pandas or R reader sees
that quote too; the JSON beside each CSV is the lossless source.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from ..results.metrics import CORPUS_METRICS
from ..text import visible

RUN_COLUMNS = ("layer", "position", "input_token", "top1_token", "top1_prob", "entropy",
               "kl_to_final", "next_token_prob", "next_token_rank", "target_prob",
               "target_rank")


def _cell(grid: Any, layer: int, position: int) -> Any:
    """grid[layer][position], or None where the field, its row or its cell is null."""
    if grid is None or grid[layer] is None:
        return None
    return grid[layer][position]


# What a spreadsheet may evaluate at a text cell's start (a formula, or DDE through one); a
# leading tab or carriage return, the other usual ones, never remains after visible().
FORMULA_START = ("=", "+", "-", "@")


def text_cell(value: str) -> str:
    """A text cell as written: visible (text.py), and a leading quote where a spreadsheet
    would read a formula."""
    value = visible(value)
    return "'" + value if value.startswith(FORMULA_START) else value


def _text(rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows([["" if value is None else text_cell(value) if isinstance(value, str)
                       else value for value in row] for row in rows])
    return out.getvalue()


def run_csv(document: dict[str, Any]) -> str:
    """The run's cells, one CSV row per (layer, position); token groups (``target_groups``)
    add a probability and a rank column each."""
    groups = document.get("target_groups") or []
    header = list(RUN_COLUMNS)
    for group in groups:
        header += [f"group {group['name']} prob", f"group {group['name']} rank"]
    vocab = document["vocab"]
    tokens = [vocab.get(str(i), f"#{i}") for i in document["input_ids"]]
    rows: list[list[Any]] = [header]
    for layer in range(len(document["layers"])):
        top_ids, top_probs = document["topk_ids"][layer], document["topk_probs"][layer]
        for position, token in enumerate(tokens):
            top1 = None if top_ids is None else top_ids[position][0]
            row = [layer, position, token,
                   None if top1 is None else vocab.get(str(top1), f"#{top1}"),
                   None if top_probs is None else top_probs[position][0]]
            row += [_cell(document.get(field), layer, position)
                    for field in ("entropy", "kl_to_final", "next_token_prob",
                                  "next_token_rank", "target_prob", "target_rank")]
            for group in groups:
                row += [_cell(group["prob"], layer, position),
                        _cell(group["rank"], layer, position)]
            rows.append(row)
    return _text(rows)


def attribution_csv(document: dict[str, Any]) -> str:
    """A run's direct logit attribution (``decomposition``): one row per (position,
    attributed token, component), then per head (``attn.<b>.head<h>``, and the output
    projection's bias as ``attn.<b>.bias``) where the model splits its attention."""
    field = document["decomposition"]
    vocab = document["vocab"]
    rows: list[list[Any]] = [["position", "token", "component", "attribution"]]
    heads = field.get("heads")
    for position, ids in enumerate(field["token_ids"]):
        for j, token_id in enumerate(ids):
            token = vocab.get(str(token_id), f"#{token_id}")
            for name, values in zip(field["components"], field["attrs"]):
                rows.append([position, token, name, values[position][j]])
            if not heads:
                continue
            for block, per_head in enumerate(heads["attrs"], 1):
                for head, values in enumerate(per_head):
                    rows.append([position, token, f"attn.{block}.head{head}",
                                 values[position][j]])
                if heads["bias"] is not None:
                    rows.append([position, token, f"attn.{block}.bias",
                                 heads["bias"][block - 1][position][j]])
    return _text(rows)


def corpus_csv(document: dict[str, Any]) -> str:
    """A corpus curves document: (row, metric, mean, low, high); low and high are the 95 %
    bootstrap interval, empty where there is none. Token groups (``target_groups``, their
    mean probability per row) follow the metrics as ``group:<name>``."""
    curves = [(m.name, document[m.name], document.get(f"{m.name}_ci")) for m in CORPUS_METRICS]
    curves += [(f"group:{group['name']}", group["prob"], group.get("prob_ci"))
               for group in document.get("target_groups") or []]
    rows: list[list[Any]] = [["row", "metric", "mean", "low", "high"]]
    for layer in document["layers"]:
        for name, values, interval in curves:
            bounds = interval[layer] if interval and interval[layer] else (None, None)
            rows.append([layer, name, values[layer], *bounds])
    return _text(rows)
