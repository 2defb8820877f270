"""The static site's pages: page tree, Jinja2 environment, figures, assets.

Reads LensResult documents only (never torch). Every link is relative, so the site works
from file://, any static host, and GitHub Pages under a sub-path. Output is deterministic:
the same manifest and results give byte-identical files.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import jinja2
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

try:  # Python >= 3.11
    from importlib.resources.abc import Traversable
except ImportError:  # pragma: no cover - Python 3.10
    from importlib.abc import Traversable

from .._version import __version__
from ..lens.kinds import lens_style
from ..manifest.specs import EXPORT_FORMATS, Manifest
from ..results.documents import dumps, encoded
from ..results.metrics import CORPUS_METRICS, MIN_INTERVAL_DOCUMENTS, Metric, metric_table
from . import furniture
from .export import ExportJob, figure_digest, write_exports
from .figures import (FIRST_VIEW_CODECS, depth_curves, display_notes, first_view, gap_text,
                      is_long, script_json, summary, without_tracks)
from .outputs import Output, SiteFiles, check_outputs
from .search import search_index, search_script
from .static_figures import corpus_figure, heatmap_parts, lens_title, token_spans
from .tables import attribution_csv, corpus_csv, run_csv


def builtin_templates() -> Traversable:
    """The templates packaged with lensreport (a folder, or a zip entry: never a str path)."""
    return importlib.resources.files("lensreport.site") / "templates"


def plotly_js() -> Traversable:
    """The plotly.js pages and notebook outputs load: plotly.js's cartesian partial bundle
    (heatmap and scatter are the only traces drawn; 1.5 MB against the full bundle's 4.8,
    so a cold page parses a third of it), vendored by scripts/vendor_plotly.sh at the
    version the plotly package bundles. Static exports draw with the package's full
    bundle, through kaleido."""
    return importlib.resources.files("lensreport.site") / "vendor" / "plotly-cartesian.min.js"


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
    env.filters["millions"] = lambda n: "–" if not n else (
        f"{n / 1e9:.1f} B" if n >= 1e9 else f"{n / 1e6:.0f} M" if n >= 1e6 else f"{n:,}")
    env.filters["absolute_url"] = furniture.absolute_url
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

    def stem(self, kind: str) -> str:
        """<prompt> for the first lens, <prompt>.<lens> for others (data and figure files)."""
        suffix = "" if kind == self.lenses[0][0] else f".{kind}"
        return f"{self.model.slug}/{self.prompt.slug}{suffix}"

    def data_path_for(self, kind: str) -> str:
        """data/<model>/<prompt>.json for the first lens, <prompt>.<lens>.json for others."""
        return f"data/{self.stem(kind)}.json"

    def csv_path_for(self, kind: str) -> str:
        return f"data/{self.stem(kind)}.csv"

    @property
    def attribution_path(self) -> str | None:
        """data/<model>/<prompt>.attribution.csv where the run has a direct logit attribution
        (the same for every lens: written once, from the first lens's document)."""
        if not self.document.get("decomposition"):
            return None
        return f"data/{self.model.slug}/{self.prompt.slug}.attribution.csv"

    def export_paths(self, kind: str, fmt: str) -> list[str]:
        """figures/<model>/<stem>.<fmt>, then <stem>.part2.<fmt> … for a long prompt's parts
        (static_figures.py)."""
        parts = len(token_spans(len(self.document["input_ids"])))
        return [f"figures/{self.stem(kind)}{'' if part == 1 else f'.part{part}'}.{fmt}"
                for part in range(1, parts + 1)]

    def downloads(self, kind: str, formats: tuple[str, ...]) -> list[tuple[str, str]]:
        """(label, path) of one lens's files: the static figures (first part), CSV, JSON."""
        return ([(fmt.upper(), self.export_paths(kind, fmt)[0])
                 for fmt in EXPORT_FORMATS if fmt in formats]
                + [("CSV", self.csv_path_for(kind)), ("JSON", self.data_path_for(kind))]
                + ([("attribution CSV", self.attribution_path)]
                   if self.attribution_path and kind == self.lenses[0][0] else []))

    def parts(self, kind: str, formats: tuple[str, ...]) -> tuple[str, list[str]]:
        """A long prompt's static figure in parts: (format, every part's path) in the first
        exported format; (format, []) for a prompt in one part or without export."""
        fmt = next((f for f in EXPORT_FORMATS if f in formats), "")
        paths = self.export_paths(kind, fmt) if fmt else []
        return fmt, paths if len(paths) > 1 else []

    def export_jobs(self, formats: tuple[str, ...]) -> list[ExportJob]:
        """The static figures of every lens in ``formats`` (none without export)."""
        jobs: list[ExportJob] = []
        for kind, document in self.lenses if formats else ():
            parts = heatmap_parts(document, lens_title(self.model.name, self.prompt.name, kind))
            digests = [figure_digest(part) for part in parts]
            jobs += [ExportJob(path, part, fmt, digest) for fmt in formats
                     for path, part, digest in zip(self.export_paths(kind, fmt), parts, digests)]
        return jobs

    def image_path(self, formats: tuple[str, ...]) -> str | None:
        """The figure's PNG (its first part), where PNG export is on: pages' og:image."""
        return self.export_paths(self.lenses[0][0], "png")[0] if "png" in formats else None

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

    def data(self, root: str, light: bool, tracks: bool = True, comparison: bool = False
             ) -> dict[str, Any]:
        """What a page inlines for this figure, packed (schema 3): every lens's document
        (without the tracked tokens where the page has no trajectories: ``tracks`` false), or
        (``light``: long prompts, gallery-scale sites, embeds) the first lens's first view and
        where the documents are, fetched once it is drawn.
        On a page with the depth comparison (``comparison``: prompt pages) each lens's
        curves come along either way (figures.py)."""
        lenses = [{"style": lens_style(kind), "gap_text": gap_text(kind),
                   "depth": depth_curves(document) if comparison else []}
                  for kind, document in self.lenses]
        if light:
            return {"id": self.id, "model": self.model.name, "lenses": lenses,
                    "documents": [encoded(first_view(self.document), FIRST_VIEW_CODECS)],
                    "fetch": [root + self.data_path_for(kind) for kind in self.lens_kinds]}
        documents = [encoded(document if tracks else without_tracks(document))
                     for _, document in self.lenses]
        return {"id": self.id, "model": self.model.name, "lenses": lenses,
                "documents": documents, "fetch": None}

    def embed_snippet(self, site_url: str | None) -> str:
        height = min(900, 140 + 22 * len(self.document["layers"]))
        return embed_snippet(site_url, self.embed_path, height,
                             f"Logit lens: {self.model.name} on {self.prompt.name}")

    @property
    def display_notes(self) -> dict[str, Any]:
        """Chat template and generated tokens, for the figure's legend line (figures.py)."""
        return display_notes(self.document)

    @property
    def lens_styles(self) -> list[dict[str, str]]:
        """Label and line style of each lens, in order (the page's lens switch)."""
        return [lens_style(kind) for kind in self.lens_kinds]


# Gallery scale: more models than this make the index a table of models (gallery.js) and a
# prompt page a model picker showing this many at first; more models or prompts than this
# make every page inline first views only (one copy of each run's numbers: its documents).
# lensreport.js draws pages of more figures than this as they scroll into view (LAZY_AFTER).
GALLERY_SIZE = 12
# The header's lists of prompts, corpora and models: a longer list is not written into every
# page (at 1,000 models that is 80 KB a page) but filled from the search index when opened.
NAV_SIZE = 24


def model_picker(row: list[Figure]) -> list[tuple[str, list[tuple[Figure, bool]]]]:
    """A wide prompt page's model picker: families (``model_type``, in order of first
    appearance), each with its figures and whether it is shown at first (the first
    GALLERY_SIZE of the page, in manifest order)."""
    families: dict[str, list[tuple[Figure, bool]]] = {}
    for index, figure in enumerate(row):
        family = figure.document["model"].get("model_type") or "other"
        families.setdefault(family, []).append((figure, index < GALLERY_SIZE))
    return list(families.items())


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
    def csv_path(self) -> str:
        return self.data_path[:-len(".json")] + ".csv"

    @property
    def gap_text(self) -> str:
        return gap_text(self.lens)

    def payload(self) -> dict[str, Any]:
        """The curves for the browser: ``values`` and ``ci`` (intervals) by metric name; a
        row the lens does not cover is null in each metric and its interval (the chart draws
        a gap there)."""
        names = [metric.name for metric in CORPUS_METRICS] + [
            f"group:{group['name']}" for group in self.groups]
        curves = {name: self.curve(name) for name in names}
        return {"model": self.model.name, "lens": self.lens, "style": lens_style(self.lens),
                "layers": len(self.document["layers"]),
                "values": {name: values for name, (values, _) in curves.items()},
                "ci": {name: interval for name, (_, interval) in curves.items()}}

    @property
    def groups(self) -> list[dict[str, Any]]:
        """The corpus's token groups in this document (mean P(group) per row)."""
        return self.document.get("target_groups") or []

    def curve(self, name: str) -> tuple[list[Any], list[Any] | None]:
        """A metric's values per row and their intervals (None: no interval); a token
        group's curve is the metric ``group:<name>``."""
        for group in self.groups:
            if name == f"group:{group['name']}":
                return group["prob"], group["prob_ci"]
        if name.startswith("group:"):
            return [None] * len(self.document["layers"]), None
        return self.document[name], self.document[f"{name}_ci"]


def corpus_metrics(series: list[CurveSeries]) -> tuple[Metric, ...]:
    """The corpus page's panels and table columns: the metric table, then one P(group) per
    token group of the corpus (in the order its documents list them)."""
    names = dict.fromkeys(group["name"] for item in series for group in item.groups)
    return CORPUS_METRICS + tuple(Metric(f"group:{name}", f"P({name})")
                                  for name in names)


def corpus_series(manifest: Manifest, corpus_documents: dict[tuple[str, str, str], Any]
                  ) -> dict[str, list[CurveSeries]]:
    """Per corpus, its curves in manifest order of models and lenses."""
    return {corpus.name: [CurveSeries(corpus, model, kind, corpus_documents[key])
                          for model in manifest.models for kind in model.lens.kinds
                          if (key := (corpus.name, model.name, kind)) in corpus_documents]
            for corpus in manifest.corpora}


def render_site(manifest: Manifest, documents: dict[tuple[str, str, str], dict[str, Any]],
                out: Path, live_reload: bool = False,
                corpus_documents: dict[tuple[str, str, str], dict[str, Any]] | None = None,
                store: Any | None = None) -> None:
    """Write every page, data file, static figure and asset under ``out`` (an empty folder);
    static figures rendered before come from ``store`` (a ResultsStore), new ones go there.

    Every output is planned first and the plan checked (outputs.py): nothing is written
    when a path would leave the site or two outputs would share a file."""
    outputs, jobs = plan_site(manifest, documents, corpus_documents or {}, live_reload)
    planned = check_outputs([(o.path, o.what) for o in outputs]
                            + [(job.path, f"static figure {job.path}") for job in jobs])
    files = SiteFiles(out, planned)
    for output in outputs:
        files.write(output.path, output.content())
    write_exports(jobs, files, store)


def plan_site(manifest: Manifest, documents: dict[tuple[str, str, str], dict[str, Any]],
              corpus_documents: dict[tuple[str, str, str], dict[str, Any]],
              live_reload: bool = False) -> tuple[list[Output], list[ExportJob]]:
    """Every file of the site (pages render when written) and every static figure to
    export; nothing is written here."""
    env = environment(manifest.site.theme_dir)
    figures = make_figures(manifest, documents)
    curves = corpus_series(manifest, corpus_documents)
    corpora = [c for c in manifest.corpora if curves.get(c.name)]
    models = [m for m in manifest.models
              if any(k[0] == m.name for k in figures)
              or any(s.model.name == m.name for series in curves.values() for s in series)]
    prompts = [p for p in manifest.prompts if any(k[1] == p.name for k in figures)]
    common = {"site": manifest.site, "models": models, "prompts": prompts, "figures": figures,
              "corpora": corpora, "curves": curves, "version": __version__,
              "live_reload": live_reload, "gallery_size": GALLERY_SIZE, "nav_size": NAV_SIZE,
              "compact": max(len(models), len(prompts)) > GALLERY_SIZE}

    export = manifest.site.export
    outputs: list[Output] = []
    pages: list[str] = []

    def page(template: str, path: str, what: str, description: str, image: str | None = None,
             root: str | None = None, **context: Any) -> None:
        """One page; ``description`` and ``image`` (a PNG of the site) are its preview."""
        def html() -> str:
            return env.get_template(template).render(
                root="../" * path.count("/") if root is None else root, path=path,
                description=description, image=image, **common, **context)
        outputs.append(Output(path, what, html))
        pages.append(path)

    def data(path: str, what: str, content: Callable[[], str]) -> None:
        outputs.append(Output(path, what, content))

    page("index.html", "index.html", "the index page", furniture.shorten(
        manifest.site.description or f"{manifest.site.title}: the logit lens on "
        f"{len(models)} model(s) and {len(prompts)} prompt(s), layer by layer."))
    for prompt in prompts:
        row = [figures[m.name, prompt.name] for m in models if (m.name, prompt.name) in figures]
        page("prompt.html", f"prompts/{prompt.slug}/index.html", f"prompt '{prompt.name}'",
             furniture.prompt_description(prompt, [f.model.name for f in row]),
             row[0].image_path(export), prompt=prompt, row=row,
             picker=model_picker(row) if len(row) > GALLERY_SIZE else None)
    for model in models:
        row = [figures[model.name, p.name] for p in prompts if (model.name, p.name) in figures]
        curve_facts = [item.document["model"] for series in curves.values() for item in series
                       if item.model.name == model.name]
        facts = row[0].document["model"] if row else curve_facts[0]
        page("model.html", f"models/{model.slug}/index.html", f"model '{model.name}'",
             furniture.model_description(model, facts, len(row)),
             row[0].image_path(export) if row else None, model=model, row=row, facts=facts)
    jobs: list[ExportJob] = []
    for corpus in corpora:
        series = curves[corpus.name]
        first = series[0].document["corpus"]
        panels = corpus_metrics(series)
        groups = panels[len(CORPUS_METRICS):]
        context = dict(corpus=corpus, series=series, corpus_facts=first,
                       metrics=panels, groups=groups,
                       min_interval_documents=MIN_INTERVAL_DOCUMENTS,
                       payload={"corpus": corpus.name,
                                "metrics": metric_table() + [asdict(m) for m in groups],
                                "series": [item.payload() for item in series]})
        snippet = embed_snippet(manifest.site.site_url, f"embed/corpora/{corpus.slug}.html", 900,
                                f"Corpus curves: {corpus.name}")
        description = furniture.corpus_description(
            corpus, list(dict.fromkeys(item.model.name for item in series)))
        figure_paths = {fmt: f"figures/corpora/{corpus.slug}.{fmt}" for fmt in EXPORT_FORMATS
                        if fmt in export}
        image = figure_paths.get("png")
        what = f"corpus '{corpus.name}'"
        page("corpus.html", f"corpora/{corpus.slug}/index.html", what, description, image,
             embed=False, embed_snippet=snippet, figure_paths=figure_paths, **context)
        page("corpus.html", f"embed/corpora/{corpus.slug}.html", f"{what} (embed)", description,
             image, embed=True, embed_snippet="", figure_paths=figure_paths, **context)
        for item in series:
            curves_of = f"{what}, model '{item.model.name}' ({item.lens} lens)"
            data(item.data_path, f"{curves_of}: JSON", lambda item=item: dumps(item.document))
            data(item.csv_path, f"{curves_of}: CSV", lambda item=item: corpus_csv(item.document))
        if figure_paths:
            drawn = corpus_figure(corpus.name, context["metrics"], context["payload"]["series"])
            digest = figure_digest(drawn)
            jobs += [ExportJob(path, drawn, fmt, digest) for fmt, path in figure_paths.items()]
    for figure in figures.values():
        what = f"model '{figure.model.name}' on prompt '{figure.prompt.name}'"
        page("embed.html", figure.embed_path, f"{what} (embed)",
             furniture.figure_description(figure), figure.image_path(export), figure=figure)
        for kind, document in figure.lenses:
            data(figure.data_path_for(kind), f"{what} ({kind} lens): JSON",
                 lambda document=document: dumps(document))
            if manifest.site.csv_files:  # else the browser writes it on a click
                data(figure.csv_path_for(kind), f"{what} ({kind} lens): CSV",
                     lambda document=document: run_csv(document))
        if figure.attribution_path and manifest.site.csv_files:
            data(figure.attribution_path, f"{what}: attribution CSV",
                 lambda figure=figure: attribution_csv(figure.document))
        jobs += figure.export_jobs(export)
    _plan_furniture(manifest, figures, pages, outputs)
    page("404.html", "404.html", "the 404 page", "This page does not exist.",
         root=furniture.absolute_url(manifest.site.site_url, "") if manifest.site.site_url
         else "/")
    outputs.append(Output("assets/search-index.js", "the search index", lambda: search_script(
        search_index(manifest.site, models, prompts, corpora))))
    outputs += _assets(manifest.site.theme_dir)
    outputs.append(Output(".nojekyll", "the GitHub Pages marker", lambda: b""))
    return outputs, jobs


def _plan_furniture(manifest: Manifest, figures: dict[tuple[str, str], Figure],
                    pages: list[str], outputs: list[Output]) -> None:
    """sitemap.xml, robots.txt and the social card: only with site_url (absolute URLs).
    The sitemap lists the ``pages`` planned so far (the 404 page comes after it)."""
    site_url = manifest.site.site_url
    if not site_url:
        return
    first = next(iter(figures.values()), None)
    listed = list(pages)
    outputs += [
        Output("sitemap.xml", "the sitemap", lambda: furniture.sitemap_xml(site_url, listed)),
        Output("robots.txt", "robots.txt", lambda: furniture.robots_txt(site_url)),
        Output(furniture.CARD_PATH, "the social card",
               lambda: furniture.card_png(first.document["entropy"] if first else None))]


def _assets(theme_dir: Path | None) -> list[Output]:
    """plotly.min.js, the built-in assets, then the theme's (which win on a name clash)."""
    sources: dict[str, Callable[[], bytes]] = {
        "plotly.min.js": lambda: plotly_js().read_bytes()}
    folders: list[Traversable] = [builtin_templates() / "assets"]
    if theme_dir is not None:
        folders.append(theme_dir / "assets")
    for folder in folders:
        if folder.is_dir():
            for asset in sorted(folder.iterdir(), key=lambda item: item.name):
                if asset.is_file():
                    sources[asset.name] = asset.read_bytes
    return [Output(f"assets/{name}", f"the asset {name}", read)
            for name, read in sources.items()]
