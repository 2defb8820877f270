"""Plotly figure descriptions for the static export (site/export.py renders them).

The page draws its heatmaps in the browser (assets/lensreport.js, ``Figure.draw``); a static
figure is the page's *first view* described once here in Python: the first lens, entropy
colouring (Viridis, from the lowest to the highest value, as Plotly scales the page's), the
top-1 token as cell text, the page's cell size (62 px per token, 21 px per layer), margins,
fonts and light colours. Change one, change the other.

Long prompts are split, not shrunk: a heatmap shows at most ``PANEL_TOKENS`` tokens per
panel, panels are stacked top to bottom like lines of text (balanced, so 50 tokens are two
panels of 25), and one file holds at most ``PANELS_PER_PART`` panels; the tokens after that
go to ``<prompt>.part2.<fmt>``, ``.part3`` … . Every panel and part shares one colour scale
(the prompt's lowest to highest entropy), so colours compare across them.

Every string reaches Plotly through :func:`plotly_text` (Plotly reads tags such as ``<b>``
and entities in its text), as lensreport.js's ``plotlyText`` does in the browser, under the
one rule for text (lensreport/text.py): a control character fails the PNG export and makes
the SVG ill-formed XML, a bidi override reorders the label around it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..lens.kinds import lens_style
from ..results.metrics import Metric
from ..text import visible

PANEL_TOKENS = 40
PANELS_PER_PART = 4
# The page's look (lensreport.js and style.css, light scheme).
BACKGROUND, FOREGROUND = "#ffffff", "#1d1f23"
FONT = {"color": FOREGROUND, "family": "system-ui, sans-serif", "size": 12}
TOKEN_WIDTH, LAYER_HEIGHT = 62, 21
PALETTE = ["#2f6fde", "#e4572e", "#17a398", "#9b5de5", "#f2a541", "#6c757d", "#d63384",
           "#198754"]


def plotly_text(text: str) -> str:
    """Text as Plotly shows it literally: visible (text.py), '&', '<' and '>' as entities."""
    return visible(str(text)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def short_text(text: str, limit: int) -> str:
    """At most ``limit`` code points, the last an ellipsis (lensreport.js's shortText)."""
    chars = list(str(text))
    return "".join(chars[:limit - 1]) + "…" if len(chars) > limit else "".join(chars)


def _token(document: dict[str, Any], token_id: int) -> str:
    return document["vocab"].get(str(token_id), f"#{token_id}")


def layer_ticks(layers: int) -> list[int]:
    """A tick stride that keeps at most ~24 ticks and always the last layer."""
    stride = max(1, math.ceil(layers / 24))
    ticks = list(range(0, layers, stride))
    return ticks if ticks[-1] == layers - 1 else ticks + [layers - 1]


def token_spans(length: int) -> list[list[tuple[int, int]]]:
    """[part][panel] -> (first, end) token ranges: balanced panels of at most PANEL_TOKENS,
    at most PANELS_PER_PART panels per part."""
    panels = math.ceil(length / PANEL_TOKENS)
    size = math.ceil(length / panels)
    spans = [(start, min(start + size, length)) for start in range(0, length, size)]
    return [spans[i:i + PANELS_PER_PART] for i in range(0, len(spans), PANELS_PER_PART)]


def heatmap_parts(document: dict[str, Any], title: str) -> list[dict[str, Any]]:
    """The static heatmap of one document, as Plotly figure dicts (one per part)."""
    entropy = document["entropy"]
    layers, length = len(document["layers"]), len(document["input_ids"])
    values = [v for row in entropy if row is not None for v in row if v is not None]
    scale = (min(values, default=0.0), max(values, default=1.0))
    tokens = [_token(document, i) for i in document["input_ids"]]
    top1 = [None if row is None else [cell[0] for cell in row] for row in document["topk_ids"]]
    spans = token_spans(length)
    split = len(spans) > 1 or len(spans[0]) > 1
    return [_heatmap_part(document, entropy, top1, tokens, panels, layers, scale,
                          title if len(spans) == 1 else
                          f"{title} (part {number} of {len(spans)})", split)
            for number, panels in enumerate(spans, 1)]


def _heatmap_part(document: dict[str, Any], entropy: list[Any], top1: list[Any],
                  tokens: list[str], panels: list[tuple[int, int]], layers: int,
                  scale: tuple[float, float], title: str, split: bool) -> dict[str, Any]:
    """One file's panels; ``split``: the prompt has several panels, each says its tokens."""
    width_tokens = max(end - start for start, end in panels)
    plot_height = max(150, LAYER_HEIGHT * layers + 10)
    depths = document.get("row_depths") or list(range(layers))
    top, gap, bottom = 40, 110, 90  # gap: a panel's rotated tick labels, then the next title
    height = top + bottom + len(panels) * plot_height + (len(panels) - 1) * gap
    inner = height - top - bottom
    traces, layout = [], {
        "width": max(600, 90 + TOKEN_WIDTH * width_tokens), "height": height,
        "margin": {"l": 60, "r": 20, "t": top, "b": bottom},
        "paper_bgcolor": BACKGROUND, "plot_bgcolor": BACKGROUND, "font": FONT,
        "title": {"text": plotly_text(title), "x": 0, "xref": "paper", "xanchor": "left",
                  "font": {"size": 14}},
        "coloraxis": {"colorscale": "Viridis", "cmin": scale[0], "cmax": scale[1],
                      "colorbar": {"title": {"text": "Entropy (nats)", "side": "right"},
                                   "thickness": 12}},
        "annotations": [],
    }
    for index, (start, end) in enumerate(panels):
        suffix = "" if index == 0 else str(index + 1)
        upper = inner - index * (plot_height + gap)
        positions = list(range(start, end))
        traces.append({
            "type": "heatmap", "xaxis": f"x{suffix}", "yaxis": f"y{suffix}",
            "coloraxis": "coloraxis", "x": positions, "y": list(range(layers)),
            "z": [[None] * len(positions) if row is None else row[start:end]
                  for row in entropy],
            "text": [[""] * len(positions) if row is None else
                     [plotly_text(short_text(_token(document, i), 10)) for i in row[start:end]]
                     for row in top1],
            "texttemplate": "%{text}", "textfont": {"size": 10}, "xgap": 1, "ygap": 1,
            "hoverongaps": False,
        })
        layout[f"xaxis{suffix}"] = {
            "anchor": f"y{suffix}", "tickmode": "array", "tickvals": positions,
            "ticktext": [plotly_text(short_text(tokens[t], 12)) for t in positions],
            "tickangle": -45, "range": [start - 0.5, start + width_tokens - 0.5],
            "zeroline": False,
            "title": {"text": "input token"} if index == len(panels) - 1 else {},
        }
        layout[f"yaxis{suffix}"] = {
            "anchor": f"x{suffix}", "domain": [(upper - plot_height) / inner, upper / inner],
            "tickmode": "array", "tickvals": layer_ticks(layers), "title": {"text": "layer"},
            # Rows labelled by depth (b − 0.5: after block b's attention, rows: sublayer).
            "ticktext": [str(depths[row]) for row in layer_ticks(layers)],
            "range": [-0.5, layers - 0.5], "zeroline": False,
        }
        if split:
            layout["annotations"].append({
                "text": f"tokens {start}–{end - 1}", "showarrow": False, "xref": "paper",
                "yref": "paper", "x": 0, "xanchor": "left", "y": upper / inner,
                "yanchor": "bottom", "font": {"size": 11}})
    return {"data": traces, "layout": layout}


def corpus_figure(name: str, metrics: Sequence[Metric], series: list[dict[str, Any]]
                  ) -> dict[str, Any]:
    """A corpus page's curves as one figure: a panel per metric of the page (two columns), a
    line per (model, lens) with its 95 % band, against normalised depth; ``series`` are the
    page's payloads (``CurveSeries.payload``)."""
    columns, panel_width, panel_height, gap_x, gap_y = 2, 520, 280, 90, 90
    rows = math.ceil(len(metrics) / columns)
    top, bottom, left, right = 50, 120, 70, 20
    width = left + right + columns * panel_width + (columns - 1) * gap_x
    height = top + bottom + rows * panel_height + (rows - 1) * gap_y
    inner_w, inner_h = width - left - right, height - top - bottom
    layout: dict[str, Any] = {
        "width": width, "height": height,
        "margin": {"l": left, "r": right, "t": top, "b": bottom},
        "paper_bgcolor": BACKGROUND, "plot_bgcolor": BACKGROUND, "font": FONT,
        "title": {"text": plotly_text(f"Corpus: {name}"), "x": 0, "xanchor": "left",
                  "font": {"size": 14}},
        "legend": {"orientation": "h", "x": 0, "y": -0.06, "yanchor": "top"},
        "annotations": [],
    }
    traces: list[dict[str, Any]] = []
    for index, metric in enumerate(metrics):
        row, column = divmod(index, columns)
        suffix = "" if index == 0 else str(index + 1)
        x0 = column * (panel_width + gap_x) / inner_w
        y1 = 1 - row * (panel_height + gap_y) / inner_h
        layout[f"xaxis{suffix}"] = {
            "anchor": f"y{suffix}", "domain": [x0, x0 + panel_width / inner_w],
            "title": {"text": "normalised depth (layer / layers)"}, "range": [0, 1],
            "gridcolor": "#e3e6ea"}
        layout[f"yaxis{suffix}"] = {
            "anchor": f"x{suffix}", "domain": [y1 - panel_height / inner_h, y1],
            "gridcolor": "#e3e6ea", **({"type": "log"} if metric.log else
                                       {"rangemode": "tozero"})}
        layout["annotations"].append({
            "text": plotly_text(metric.label), "showarrow": False, "xref": "paper",
            "yref": "paper", "x": x0, "xanchor": "left", "y": y1, "yanchor": "bottom",
            "font": {"size": 13}})
        for number, item in enumerate(series):
            colour = PALETTE[number % len(PALETTE)]
            last = item["layers"] - 1
            xs = [layer / last if last else 0 for layer in range(item["layers"])]
            label = plotly_text(f"{item['model']} ({item['style']['label']})")
            common = {"xaxis": f"x{suffix}", "yaxis": f"y{suffix}", "x": xs,
                      "connectgaps": False, "legendgroup": label}
            interval = item["ci"].get(metric.name)
            if interval:  # none below the minimum number of documents
                for bound, fill in ((1, {}), (0, {"fill": "tonexty",
                                                  "fillcolor": colour + "33"})):
                    traces.append({**common, "type": "scatter", "mode": "lines",
                                   "y": [_plotted(c[bound], metric.log) if c else None
                                         for c in interval],
                                   "line": {"width": 0, "color": colour},
                                   "showlegend": False, **fill})
            traces.append({**common, "type": "scatter", "mode": "lines+markers",
                           "y": [_plotted(v, metric.log) for v in item["values"][metric.name]], "name": label, "showlegend": index == 0,
                           "line": {"color": colour, "dash": item["style"]["dash"]},
                           "marker": {"size": 4}})
    return {"data": traces, "layout": layout}


def _plotted(value: float | None, log: bool) -> float | None:
    """A curve's value as drawn: a log axis cannot show 0 (KL at the last row), left out."""
    return None if value is None or (log and value <= 0) else value


def lens_title(model: str, prompt: str, kind: str) -> str:
    """The heading a static heatmap carries (the page shows it above the figure)."""
    return f"{model} · {prompt} · {lens_style(kind)['label']}"
