"""The first heatmap of a long prompt page, cold: what each loading step buys. Run by hand:

    .venv/bin/python benchmarks/first_view_benchmark.py --tokens 2048 --runs 7
    .venv/bin/python benchmarks/first_view_benchmark.py --smoke    (seconds, a tiny model)

Builds one model's site with a long prompt (as ``scale_benchmark.py pages`` does), then loads
its prompt page in variants that each add one loading step to the previous one, interleaved
(the order rotates every run), each load in a fresh browser context (no cache: cold), over
HTTP:

  before       plotly.js's full bundle (the plotly package's plotly.min.js), scripts that
               block parsing at the end of <body>, every x tick label measured (Plotly's
               default ticklabeloverflow): lensreport 0.3's page
  +cartesian   the site's bundle (plotly.js's cartesian partial bundle)
  +defer       scripts deferred from <head> (fetched while the page streams in)
  +labels      tick labels not measured (ticklabeloverflow 'allow'): the page as built

Times are the page's own (performance.now(), from navigation start): the first heatmap's
image in the document ("inserted"), the task after the frame that shows it ("painted"), and
DOMContentLoaded. Medians and ranges over ``--runs`` loads per variant; compare ratios: the
machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import gzip
import re
import statistics
import tempfile
from pathlib import Path

from _shared import PACKAGED, SMOKE_HELP, long_prompt_site, smoke_model, static_server

# Records when the first heatmap's image (plotly draws a heatmap as one <image>) enters the
# document, and the first task after the frame that painted it.
TIMING_JS = """
window.__firstView = {};
new MutationObserver(function (_, observer) {
  if (!document.querySelector('.heatmap image')) return;
  observer.disconnect();
  var t = window.__firstView;
  t.inserted = performance.now();
  requestAnimationFrame(function () {
    setTimeout(function () { t.painted = performance.now(); });
  });
}).observe(document, { childList: true, subtree: true });
"""
DEFERRED = re.compile(r'<script src="([^"]*assets/(?:picker|plotly\.min|lensreport)\.js)" '
                      r'defer></script>\n?')
# Puts back Plotly's default tick-label overflow, which lensreport.js turns off.
MEASURED_LABELS = """Plotly.react = (function (react) {
  return function (el, data, layout, config) {
    if (layout && layout.xaxis) delete layout.xaxis.ticklabeloverflow;
    return react.call(Plotly, el, data, layout, config);
  };
}(Plotly.react));
"""


def variants(site: Path, page: str) -> dict[str, str]:
    """Write the variants of ``page`` beside it (same folder, so relative links hold), the
    full bundle and the tick-label shim into assets/: variant -> its page in the site."""
    import plotly

    full = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    (site / "assets" / "plotly-full.min.js").write_bytes(full.read_bytes())
    (site / "assets" / "measured-labels.js").write_text(MEASURED_LABELS, encoding="utf-8")
    html = (site / page).read_text(encoding="utf-8")
    deferred = DEFERRED.findall(html)
    if not any(src.endswith("plotly.min.js") for src in deferred) or \
            "ticklabeloverflow: 'allow'" not in (site / "assets" / "lensreport.js").read_text():
        raise SystemExit(f"{page} loads no deferred assets/plotly.min.js, or lensreport.js "
                         "sets no ticklabeloverflow: update benchmarks/first_view_benchmark.py")

    def tags(attribute: str) -> str:
        return "".join(f'<script src="{src}"{attribute}></script>\n' + (
            f'<script src="{src.replace("plotly.min.js", "measured-labels.js")}"{attribute}>'
            '</script>\n' if src.endswith("plotly.min.js") else "") for src in deferred)

    blocking = DEFERRED.sub("", html).replace("</body>", tags("") + "</body>")
    measured = DEFERRED.sub("", html).replace("</head>", tags(" defer") + "</head>")
    pages = {"before": blocking.replace("assets/plotly.min.js", "assets/plotly-full.min.js"),
             "+cartesian": blocking, "+defer": measured, "+labels": html}
    paths = {}
    for number, (name, text) in enumerate(pages.items()):
        path = str(Path(page).with_name(f"variant-{number}.html"))
        (site / path).write_text(text, encoding="utf-8")
        paths[name] = path
    return paths


def measure(site: Path, paths: dict[str, str], chromium: str, runs: int) -> dict[str, list]:
    from playwright.sync_api import sync_playwright

    times: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
    names = list(paths)
    with static_server(site) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium,
                                             args=["--no-sandbox", "--disable-gpu"])
        for run in range(runs):
            for name in names[run % len(names):] + names[:run % len(names)]:
                context = browser.new_context(viewport={"width": 1300, "height": 900})
                page = context.new_page()
                page.add_init_script(TIMING_JS)
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(base + paths[name], wait_until="commit")
                page.wait_for_function("() => window.__firstView && window.__firstView.painted",
                                       timeout=120_000, polling=50)
                found = page.evaluate("""() => Object.assign({}, window.__firstView, {
                    dcl: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd
                      || null})""")
                if errors:
                    raise SystemExit(f"{name}: the page failed: {errors[0]}")
                times[name].append(found)
                context.close()
        browser.close()
    return times


def report(site: Path, page: str, times: dict[str, list]) -> None:
    html = (site / page).read_bytes()
    print(f"prompt page: {len(html) / 1e6:.2f} MB ({len(gzip.compress(html)) / 1e6:.2f} MB "
          "gzipped)")
    for name in ("plotly-full.min.js", "plotly.min.js"):
        data = (site / "assets" / name).read_bytes()
        print(f"assets/{name}: {len(data) / 1e6:.2f} MB ({len(gzip.compress(data)) / 1e6:.2f} "
              "MB gzipped)")
    base = statistics.median(t["painted"] for t in times["before"])
    print("\n| variant | first heatmap painted s, median (min–max) | inserted s | "
          "DOMContentLoaded s | painted / before |")
    print("|---|---:|---:|---:|---:|")
    for name, loads in times.items():
        painted = [t["painted"] / 1e3 for t in loads]
        inserted = statistics.median(t["inserted"] for t in loads) / 1e3
        dcl = [t["dcl"] for t in loads if t["dcl"]]
        dcl_text = f"{statistics.median(dcl) / 1e3:.2f}" if dcl else "–"
        print(f"| {name} | {statistics.median(painted):.2f} ({min(painted):.2f}–"
              f"{max(painted):.2f}) | {inserted:.2f} | {dcl_text} | "
              f"{statistics.median(painted) * 1e3 / base:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2",
                        help="smollm2, gemma, or any model reference lensreport accepts")
    parser.add_argument("--tokens", type=int, default=2048, help="the long prompt's length")
    parser.add_argument("--runs", type=int, default=5, help="cold loads per variant")
    parser.add_argument("--work", type=Path, default=None,
                        help="build into (or reuse the site in) this folder, kept")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lensreport-bench-") as folder:
        work = args.work or Path(folder)
        reference, label = PACKAGED.get(args.model, args.model), args.model
        if args.smoke:
            reference, label = smoke_model(work / "tiny"), "tiny-llama"
            args.tokens, args.runs = 1200, 1
        if not (work / "site").is_dir():
            work.mkdir(parents=True, exist_ok=True)
            long_prompt_site(work, reference, label, args.tokens, 32 if args.smoke else 64)
        page = "prompts/long/index.html"
        times = measure(work / "site", variants(work / "site", page), args.chromium, args.runs)
        report(work / "site", page, times)


if __name__ == "__main__":
    main()
