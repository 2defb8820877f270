"""What direct logit attribution and sub-layer rows cost. Run by hand:

    .venv/bin/python benchmarks/decompose_benchmark.py --model gemma --tokens 1024
    .venv/bin/python benchmarks/decompose_benchmark.py --smoke     (seconds, a tiny random model)

For each prompt length, in one process (compare ratios, not absolute times, on a shared
machine), the median of three runs of:
  (a) lens:      ModelSession.run on block rows, no attribution (the forward pass excluded)
  (b) +DLA:      the same with the decomposition (and its forward hooks' cost: the forward
                 pass with and without capturing the blocks' parts, difference added)
  (c) sublayer:  rows: sublayer, no attribution
with the ratios b/a (the issue's budget: at most 1.10 on a 1,024-token Gemma-3 prompt) and
c/a (about the doubled rows read).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _shared import SMOKE_HELP, TEXT, open_session, smoke_model
from lensreport.lens.kinds import LogitLens
from lensreport.models.prompts import PromptRequest


def median_time(function, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2",
                        help="smollm2, gemma, or any model reference lensreport accepts")
    parser.add_argument("--tokens", type=int, nargs="+", default=None,
                        help="prompt lengths (default 128 1024; --smoke: 16)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory(prefix="lensreport-smoke-") as folder:
        label, reference, tokens = args.model, args.model, args.tokens or [128, 1024]
        if args.smoke:
            label, reference = "tiny-llama (smoke)", smoke_model(Path(folder) / "tiny")
            tokens = args.tokens or [16]
        session = open_session(reference, args.device)
        facts = session.facts
        print(f"# {label}: {facts['architecture']}, {facts['num_layers']} layers, vocab "
              f"{facts['vocab_size']:,}, d {facts['hidden_size']}, {facts['dtype']}, "
              f"{torch.get_num_threads()} threads\n")
        print("| tokens | (a) lens s | (b) +DLA s | (c) sublayer s | b/a | c/a |")
        print("|---:|---:|---:|---:|---:|---:|")
        text = TEXT * 200
        lens = LogitLens()
        for count in tokens:
            ids = session.loaded.tokenizer(text)["input_ids"][:count]
            encoded = session.prepare(PromptRequest(name="bench", text="bench"))
            encoded.input_ids = ids
            plain = lambda: list(session.hidden_states([ids]))  # noqa: E731
            parts = lambda: list(session.hidden_states([ids], parts=True))  # noqa: E731
            capture = max(0.0, median_time(parts) - median_time(plain))
            [(_, hidden, last)] = parts()
            time_a = median_time(lambda: session.run(encoded, "k", hidden, last, lens, 5, False))
            time_b = capture + median_time(
                lambda: session.run(encoded, "k", hidden, last, lens, 5, True))
            time_c = median_time(
                lambda: session.run(encoded, "k", hidden, last, lens, 5, False, True))
            print(f"| {count} | {time_a:.2f} | {time_b:.2f} | {time_c:.2f} | "
                  f"{time_b / time_a:.2f} | {time_c / time_a:.2f} |", flush=True)


if __name__ == "__main__":
    main()
