"""Corpus curves, tuned-lens training and long prompts against their targets. Run by hand:

    .venv/bin/python benchmarks/scale_benchmark.py corpus --model smollm2 --tokens 1024
    .venv/bin/python benchmarks/scale_benchmark.py train --model smollm2 --steps 2
    .venv/bin/python benchmarks/scale_benchmark.py pages --tokens 2048
    .venv/bin/python benchmarks/scale_benchmark.py --smoke    (all three in seconds, tiny model)

corpus: scored tokens per second of the lens part of a corpus run (final norm, the tiled
        pass with its running statistics, per-row sums) against the float32 unembedding
        matmul for the same rows (target: ≥ 0.8 of the floor's throughput). The run is
        lens.curves.measure itself; the lens part is timed from inside it. The last column
        is the whole run's throughput, forward passes included.
train:  one training step (512 tokens) against its two unembedding matmuls per layer
        (forward and gradient), which the full-vocabulary KL makes the floor.
pages:  a prompt page for one model × N tokens × all layers: bytes of the first view
        (HTML, without the site-wide plotly.min.js), gzipped too, and the time until the
        first heatmap is drawn in headless Chromium over HTTP; and a 64-token embed.
Compare ratios within one run: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _shared import CORPUS, PACKAGED, SMOKE_HELP, long_prompt_site, open_session, smoke_model, \
    static_server


class LensPart:
    """Times the lens part of a corpus run from inside ``lens.curves.measure``.

    The functions measure calls for every window and lens (``lens_inputs``, ``stream``,
    ``_window_sums``) are wrapped for the duration, so the run is exactly the build's; the
    lens inputs are kept for the floor. Every wrapped function must run once per window, so
    a change to measure that bypasses them fails here instead of timing nothing.
    """

    WRAPPED = ("lens_inputs", "stream", "_window_sums")

    def __init__(self) -> None:
        from lensreport.lens import curves

        self.module = curves
        self.seconds = 0.0
        self.calls: Counter[str] = Counter()
        self.inputs: list[Any] = []

    def __enter__(self) -> "LensPart":
        self.saved = {name: getattr(self.module, name) for name in self.WRAPPED}
        for name, function in self.saved.items():
            setattr(self.module, name, self._timed(name, function))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, function in self.saved.items():
            setattr(self.module, name, function)

    def _timed(self, name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = function(*args, **kwargs)
            self.seconds += time.perf_counter() - started
            self.calls[name] += 1
            if name == "lens_inputs":
                self.inputs.append(result)
            return result

        return wrapper

    def check(self, windows: int) -> None:
        if any(self.calls[name] != windows for name in self.WRAPPED):
            raise SystemExit(f"lens.curves.measure no longer calls {', '.join(self.WRAPPED)} "
                             f"once per window ({dict(self.calls)} for {windows} windows): "
                             "update benchmarks/scale_benchmark.py")


def corpus(args: argparse.Namespace) -> None:
    import torch

    from lensreport.lens.corpus import CorpusSource, windows
    from lensreport.lens.curves import measure
    from lensreport.lens.kinds import LogitLens

    torch.set_grad_enabled(False)
    session = open_session(args.reference)
    head, rows = session.head, session.num_layers + 1
    lens = LogitLens()
    chosen = list(windows(CorpusSource(path=args.corpus), session.loaded.tokenizer,
                          args.context, args.corpus_tokens))
    with LensPart() as part:
        started = time.perf_counter()
        sums = measure(session, chosen, [lens])[lens]
        run_seconds = time.perf_counter() - started
    part.check(len(chosen))
    floor_seconds = 0.0
    for inputs in part.inputs:
        started = time.perf_counter()
        for layer in range(rows):
            torch.nn.functional.linear(inputs[layer].float(), head.weight.float())
        floor_seconds += time.perf_counter() - started
    scored = sums.scored_tokens
    print("| model | scored tokens | rows | floor tokens/s | lens tokens/s "
          "| lens / floor throughput | whole run tokens/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.label} | {scored} | {rows} | {scored / floor_seconds:.0f} | "
          f"{scored / part.seconds:.0f} | {floor_seconds / part.seconds:.2f} | "
          f"{scored / run_seconds:.0f} |", flush=True)


def train(args: argparse.Namespace) -> None:
    import torch

    from lensreport.lens.corpus import CorpusSource, windows
    from lensreport.lens.fit.tuned import _batches, _train_step

    torch.set_grad_enabled(True)  # the translators' gradients (corpus turns autograd off)
    session = open_session(args.reference)
    # As train_lens does: the lens, its loss and gradient in float32 whatever the model's dtype.
    head, layers, width = session.head.in_float32(), session.num_layers, session.hidden_size
    translators = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(layers))
    optimizer = torch.optim.SGD(translators.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    stream = windows(CorpusSource(path=args.corpus), session.loaded.tokenizer, args.context,
                     args.tokens_per_step * args.steps)
    print("| model | tokens in the step | step s | two matmuls s | step / floor |")
    print("|---|---:|---:|---:|---:|")
    for batch in _batches(stream, args.tokens_per_step):
        tokens = sum(len(w.input_ids) for w in batch)
        started = time.perf_counter()
        _train_step(session, head, translators, batch, optimizer)
        step = time.perf_counter() - started
        rows = torch.randn(tokens, head.weight.shape[1])
        started = time.perf_counter()
        with torch.no_grad():
            for _ in range(layers):
                logits = torch.nn.functional.linear(rows, head.weight)
                logits @ head.weight  # the gradient's matmul
        floor = time.perf_counter() - started
        print(f"| {args.label} | {tokens} | {step:.1f} | {floor:.1f} | {step / floor:.2f} |",
              flush=True)


def pages(args: argparse.Namespace) -> None:
    from playwright.sync_api import sync_playwright

    from lensreport.slugs import slugify

    work = args.work / "pages"
    work.mkdir()
    site, rows = long_prompt_site(work, args.reference, args.label, args.page_tokens,
                                  args.embed_tokens)
    slug = slugify(args.label)
    html = (site / "prompts" / "long" / "index.html").read_bytes()
    full = (site / "data" / slug / "long.json").read_bytes()  # fetched after the first view
    embed = (site / "embed" / slug / "embed64.html").read_bytes()
    print(f"prompt page ({args.page_tokens} tokens x {rows} layers), first view: "
          f"{len(html) / 1e6:.2f} MB ({len(gzip.compress(html)) / 1e6:.2f} MB gzipped); "
          f"fetched later: {len(full) / 1e6:.2f} MB ({len(gzip.compress(full)) / 1e6:.2f} MB "
          "gzipped)")
    print(f"{args.embed_tokens}-token embed page: {len(embed) / 1e3:.0f} KB")
    with static_server(site) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        for attempt in range(args.runs):
            started = time.perf_counter()
            page.goto(base + "prompts/long/index.html")
            page.wait_for_selector("html[data-figures-ready]", timeout=60_000)
            drawn = time.perf_counter() - started
            page.wait_for_function("() => [...document.querySelectorAll('.metric-select "
                                   "option')].some(o => o.value === 'kl')", timeout=60_000)
            complete = time.perf_counter() - started
            print(f"run {attempt + 1}: first heatmap drawn in {drawn:.2f} s; all metrics "
                  f"loaded in {complete:.2f} s", flush=True)
        browser.close()


PARTS = {"corpus": corpus, "train": train, "pages": pages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", choices=[*PARTS, "all"],
                        help="which benchmark (--smoke: all of them by default)")
    parser.add_argument("--model", default="smollm2",
                        help="smollm2, gemma, or any model reference lensreport accepts")
    parser.add_argument("--tokens", type=int, default=None,
                        help="corpus: tokens scored; pages: prompt length (default 2048)")
    parser.add_argument("--embed-tokens", type=int, default=64)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--tokens-per-step", type=int, default=512)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--runs", type=int, default=3, help="pages: page loads to time")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lensreport-bench-") as folder:
        args.work = Path(folder)
        run(parser, args)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    args.reference = PACKAGED.get(args.model, args.model)
    args.label = args.model if args.model in PACKAGED else "model"
    if args.smoke:
        args.what = args.what or "all"
        args.reference = smoke_model(args.work / "tiny")
        args.label = "tiny-llama"
        args.embed_tokens, args.context, args.steps, args.tokens_per_step = 32, 64, 1, 64
        args.runs = 1
    elif args.what is None:
        parser.error("say which benchmark: corpus, train, pages or all (or --smoke)")
    args.corpus_tokens = args.tokens or (128 if args.smoke else 2048)
    # Smoke: enough cells (4 rows x 1200 tokens) for a long prompt's page (fetched data).
    args.page_tokens = args.tokens or (1200 if args.smoke else 2048)
    for name, part in PARTS.items():
        if args.what in (name, "all"):
            print(f"## {name}", flush=True)
            part(args)


if __name__ == "__main__":
    main()
