"""The static site's pages: page tree, Jinja2 environment, figures, assets.

Reads LensResult documents only (never torch). Every link is relative, so the site works
from file://, any static host, and GitHub Pages under a sub-path. Output is deterministic:
the same manifest and results give byte-identical files.
"""

from __future__ import annotations

import importlib.resources
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

try:  # Python >= 3.11
    from importlib.resources.abc import Traversable
except ImportError:  # pragma: no cover - Python 3.10
    from importlib.abc import Traversable

from .._version import __version__
from ..lens.kinds import lens_style
from ..manifest.specs import Manifest
from ..results.documents import dumps
from ..results.metrics import CORPUS_METRICS, MIN_INTERVAL_DOCUMENTS, metric_table
from .figures import first_view, gap_text, is_long, payload, script_json, summary


def builtin_templates() -> Traversable:
    """The templates packaged with lensreport (a folder, or a zip entry: never a str path)."""
    return importlib.resources.files("lensreport.site") / "templates"


def plotly_js() -> Path:
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found in the plotly package ({path})")
    return path


_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


def markdown(text: str | None) -> Markup:
    """Markdown notes; raw HTML in them is escaped (html=False), never passed through."""
    return Markup(_markdown.render(text or ""))


def environment(theme_dir: Path | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if theme_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(theme_dir)))
    loaders.append(jinja2.PackageLoader("lensreport.site", "templates"))
    env = jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["markdown"] = markdown
    env.filters["script_json"] = lambda value: Markup(script_json(value))
    env.filters["percent"] = lambda p: "–" if p is None else f"{100 * p:.1f}%"
    return env


@dataclass(frozen=True)
class Figure:
    """One (model, prompt) figure: a document per lens (the model's first lens first)."""

    model: Any
    prompt: Any
    lenses: tuple[tuple[str, dict[str, Any]], ...]  # (lens kind, document)

    @property
    def document(self) -> dict[str, Any]:
        return self.lenses[0][1]

    @property
    def lens_kinds(self) -> list[str]:
        return [kind for kind, _ in self.lenses]

    @property
    def id(self) -> str:
        return f"fig-{self.model.slug}--{self.prompt.slug}"

    def data_path_for(self, kind: str) -> str:
        """data/<model>/<prompt>.json for the first lens, <prompt>.<lens>.json for others."""
        suffix = "" if kind == self.lenses[0][0] else f".{kind}"
        return f"data/{self.model.slug}/{self.prompt.slug}{suffix}.json"

    @property
    def data_path(self) -> str:
        return self.data_path_for(self.lenses[0][0])

    @property
    def embed_path(self) -> str:
        return f"embed/{self.model.slug}/{self.prompt.slug}.html"

    @property
    def summary(self) -> dict[str, Any]:
        return summary(self.document)

    @property
    def is_long(self) -> bool:
        """Too many cells to inline everything: pages carry the first view only."""
        return is_long(self.document)

    @property
    def full_data_path(self) -> str:
        return f"data/{self.model.slug}/{self.prompt.slug}.figure.json"

    def payload(self, with_tracks: bool = True) -> dict[str, Any]:
        """What the page inlines: everything (every lens as ``variants``) for a short
        prompt; for a long one the first lens's first view, with where the rest is."""
        if self.is_long:
            light = first_view(self.document, self.id)
            light["full"] = self.full_data_path
            return light
        return self.full_payload(with_tracks)

    def full_payload(self, with_tracks: bool = True) -> dict[str, Any]:
        """The first lens's payload; the other lenses' ride along as ``variants``."""
        main = payload(self.document, self.id, with_tracks)
        if len(self.lenses) > 1:
            main["variants"] = [payload(document, self.id, with_tracks)
                                for _, document in self.lenses[1:]]
        return main

    def embed_snippet(self, site_url: str | None) -> str:
        height = min(900, 140 + 22 * len(self.document["layers"]))
        return embed_snippet(site_url, self.embed_path, height,
                             f"Logit lens: {self.model.name} on {self.prompt.name}")

    @property
    def lens_styles(self) -> list[dict[str, str]]:
        """Label and line style of each lens, in order (the page's lens switch)."""
        return [lens_style(kind) for kind in self.lens_kinds]


def embed_snippet(site_url: str | None, path: str, height: int, title: str) -> str:
    """The <iframe> readers paste into a blog post (absolute when site_url is set)."""
    base = site_url.rstrip("/") + "/" if site_url else "https://YOUR-SITE/"
    return (f'<iframe src="{escape(base + path)}" width="100%" height="{height}" '
            f'style="border:0" loading="lazy" title="{escape(title)}"></iframe>')


def make_figures(manifest: Manifest, documents: dict[tuple[str, str, str], dict[str, Any]]
                 ) -> dict[tuple[str, str], Figure]:
    """Figures for every (model, prompt) with at least one document, lenses in model order."""
    figures = {}
    for model in manifest.models:
        for prompt in manifest.prompts:
            lenses = tuple((kind, documents[model.name, prompt.name, kind])
                           for kind in model.lens.kinds
                           if (model.name, prompt.name, kind) in documents)
            if lenses:
                figures[model.name, prompt.name] = Figure(model, prompt, lenses)
    return figures


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class CurveSeries:
    """One (corpus, model, lens) curves document and where its JSON lives."""

    corpus: Any
    model: Any
    lens: str
    document: dict[str, Any]

    @property
    def data_path(self) -> str:
        suffix = "" if self.lens == self.model.lens.kinds[0] else f".{self.lens}"
        return f"data/corpora/{self.corpus.slug}/{self.model.slug}{suffix}.json"

    @property
    def gap_text(self) -> str:
        return gap_text(self.lens)

    def payload(self) -> dict[str, Any]:
        """The curves for the browser; a row the lens does not cover is null in each metric
        and its interval (the chart draws a gap there)."""
        fields = [metric.name for metric in CORPUS_METRICS]
        return {"model": self.model.name, "lens": self.lens, "style": lens_style(self.lens),
                "layers": len(self.document["layers"]),
                **{name: self.document[name] for name in fields},
                **{f"{name}_ci": self.document[f"{name}_ci"] for name in fields}}


def corpus_series(manifest: Manifest, corpus_documents: dict[tuple[str, str, str], Any]
                  ) -> dict[str, list[CurveSeries]]:
    """Per corpus, its curves in manifest order of models and lenses."""
    return {corpus.name: [CurveSeries(corpus, model, kind, corpus_documents[key])
                          for model in manifest.models for kind in model.lens.kinds
                          if (key := (corpus.name, model.name, kind)) in corpus_documents]
            for corpus in manifest.corpora}


def render_site(manifest: Manifest, documents: dict[tuple[str, str, str], dict[str, Any]],
                out: Path, live_reload: bool = False,
                corpus_documents: dict[tuple[str, str, str], dict[str, Any]] | None = None
                ) -> None:
    """Write every page, data file and asset under ``out`` (an empty folder)."""
    env = environment(manifest.site.theme_dir)
    figures = make_figures(manifest, documents)
    curves = corpus_series(manifest, corpus_documents or {})
    corpora = [c for c in manifest.corpora if curves.get(c.name)]
    models = [m for m in manifest.models
              if any(k[0] == m.name for k in figures)
              or any(s.model.name == m.name for series in curves.values() for s in series)]
    prompts = [p for p in manifest.prompts if any(k[1] == p.name for k in figures)]
    common = {"site": manifest.site, "models": models, "prompts": prompts, "figures": figures,
              "corpora": corpora, "curves": curves, "version": __version__,
              "live_reload": live_reload}

    def page(template: str, path: str, **context: Any) -> None:
        depth = path.count("/")
        html = env.get_template(template).render(root="../" * depth, path=path, **common,
                                                 **context)
        _write(out / path, html)

    page("index.html", "index.html")
    for prompt in prompts:
        page("prompt.html", f"prompts/{prompt.slug}/index.html", prompt=prompt,
             row=[figures[m.name, prompt.name] for m in models
                  if (m.name, prompt.name) in figures])
    for model in models:
        row = [figures[model.name, p.name] for p in prompts if (model.name, p.name) in figures]
        curve_facts = [item.document["model"] for series in curves.values() for item in series
                       if item.model.name == model.name]
        page("model.html", f"models/{model.slug}/index.html", model=model, row=row,
             facts=row[0].document["model"] if row else curve_facts[0])
    for corpus in corpora:
        series = curves[corpus.name]
        first = series[0].document["corpus"]
        context = dict(corpus=corpus, series=series, corpus_facts=first,
                       metrics=CORPUS_METRICS, min_interval_documents=MIN_INTERVAL_DOCUMENTS,
                       payload={"corpus": corpus.name, "metrics": metric_table(),
                                "series": [item.payload() for item in series]})
        snippet = embed_snippet(manifest.site.site_url, f"embed/corpora/{corpus.slug}.html", 900,
                                f"Corpus curves: {corpus.name}")
        page("corpus.html", f"corpora/{corpus.slug}/index.html", embed=False,
             embed_snippet=snippet, **context)
        page("corpus.html", f"embed/corpora/{corpus.slug}.html", embed=True, embed_snippet="",
             **context)
        for item in series:
            _write(out / item.data_path, dumps(item.document))
    for figure in figures.values():
        page("embed.html", figure.embed_path, figure=figure)
        for kind, document in figure.lenses:
            _write(out / figure.data_path_for(kind), dumps(document))
        if figure.is_long:
            _write(out / figure.full_data_path, dumps(figure.full_payload()))
    _copy_assets(manifest.site.theme_dir, out / "assets")
    (out / ".nojekyll").write_bytes(b"")


def _copy_assets(theme_dir: Path | None, target: Path) -> None:
    """plotly.min.js, the built-in assets, then the theme's (which win on a name clash)."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plotly_js(), target / "plotly.min.js")
    folders: list[Traversable] = [builtin_templates() / "assets"]
    if theme_dir is not None:
        folders.append(theme_dir / "assets")
    for folder in folders:
        if folder.is_dir():
            for asset in sorted(folder.iterdir(), key=lambda item: item.name):
                if asset.is_file():
                    (target / asset.name).write_bytes(asset.read_bytes())
