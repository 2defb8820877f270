"""Lens step vs the unembedding-matmul floor vs the tutorial's naive approach. Run by hand:

    .venv/bin/python benchmarks/lens_benchmark.py --model smollm2 --tokens 8 128 512 1024
    .venv/bin/python benchmarks/lens_benchmark.py --smoke     (seconds, a tiny random model)
    .venv/bin/python benchmarks/lens_benchmark.py --model smollm2 --tokens 128 512 --patchscope

For each prompt length it reports, in one process (compare ratios, not absolute times, on a
shared machine):
  (a) floor:  the unembedding matmul for every layer, one layer's logits at a time, in the
              model's dtype (float32 here) under the lens's matmul settings
  (b) lens:   lensreport's lens step (final norm, all statistics, tracked tokens):
              lens.tiled.lens_inputs + lens_statistics, as ModelSession.run calls them
  (c) naive:  the tutorial's way: every layer's full logits kept, then separate
              log_softmax / softmax / entropy / KL / top-k passes
with the peak resident-memory growth of each, and the ratios b/a and c/b. `--patchscope` adds a
second table: the whole lens step of the logit lens vs the patchscope (which runs the model's
blocks above each row for every cell), with and without the target prefix's key/value cache.
`--device cuda`
is the CUDA mode (64M-logit tiles, everything on the GPU; peak MB then counts host memory).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import threading
import time
from pathlib import Path

import torch

from _shared import SMOKE_HELP, TEXT, open_session, smoke_model
from lensreport.lens.engine import ModelSession
from lensreport.lens.kinds import LogitLens, PatchscopeLens
from lensreport.lens.tiled import _exact_reductions, lens_inputs, lens_statistics

SMOKE_TOKENS = [8, 64]


def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


class PeakMemory:
    """Samples RSS every 2 ms: the peak growth over the starting point."""

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        self.start = self.peak = rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 1e6


def floor(inputs: torch.Tensor, weight: torch.Tensor) -> None:
    """The unembedding GEMM for every row, one row's logits at a time, in the weights' dtype
    and under the lens's matmul settings (no TF32, no reduced-precision reductions): what
    the tiled pass multiplies, and nothing else."""
    with _exact_reductions():
        for layer in range(inputs.shape[0]):
            logits = torch.nn.functional.linear(inputs[layer].to(weight.dtype), weight)
            del logits


def naive(hidden: tuple[torch.Tensor, ...], last: torch.Tensor, session: ModelSession,
          top_k: int) -> None:
    head = session.head
    all_logits = [head.logits(head.normalize(h)) for h in hidden[:-1]]
    all_logits.append(head.logits(last))
    logps = [torch.log_softmax(z, -1) for z in all_logits]
    probs = [lp.exp() for lp in logps]
    entropy = [-(p * lp).sum(-1) for p, lp in zip(probs, logps)]
    kl = [(probs[-1] * (logps[-1] - lp)).sum(-1) for lp in logps]
    top = [torch.topk(p, top_k, -1) for p in probs]
    del all_logits, logps, probs, entropy, kl, top


def timed(function, *args) -> tuple[float, float]:
    with PeakMemory() as memory:
        started = time.perf_counter()
        function(*args)
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # GPU work is asynchronous: time all of it
        seconds = time.perf_counter() - started
    return seconds, memory.growth_mb


def size(count: float) -> str:
    return f"{count / 1e9:.0f} GB" if count >= 1e9 else f"{count / 1e6:.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2",
                        help="smollm2, gemma, or any model reference lensreport accepts")
    parser.add_argument("--tokens", type=int, nargs="+", default=None,
                        help="prompt lengths (default 8 128 512 1024; --smoke: 8 64)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda or cuda:N (the CUDA mode: 64M-logit tiles, all on the GPU)")
    parser.add_argument("--naive-limit-gb", type=float, default=8.0,
                        help="skip (c) where its logits would need more memory than this")
    parser.add_argument("--patchscope", action="store_true",
                        help="also time the patchscope lens, with and without its prefix cache")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lensreport-smoke-") as folder:
        run(args, Path(folder))


def run(args: argparse.Namespace, folder: Path) -> None:
    torch.set_grad_enabled(False)
    label, reference = args.model, args.model
    tokens = args.tokens or [8, 128, 512, 1024]
    naive_limit = args.naive_limit_gb * 1024**3
    if args.smoke:
        label = "tiny-llama (smoke)"
        reference = smoke_model(folder / "tiny")
        tokens = args.tokens or SMOKE_TOKENS
        naive_limit = 1e6  # so the longest smoke prompt takes the "skipped" branch too
    started = time.perf_counter()
    session = open_session(reference, args.device)
    facts = session.facts
    print(f"# {label}: {facts['architecture']}, {facts['num_layers']} layers, "
          f"vocab {facts['vocab_size']:,}, d {facts['hidden_size']}, {facts['dtype']}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load {time.perf_counter() - started:.1f} s\n")
    print("| tokens | (a) floor s | (b) lens s | (c) naive s | b/a | c/b "
          "| (b) peak MB | (c) peak MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    head = session.head
    lens = session.bind(LogitLens())
    long_ids = session.loaded.tokenizer(TEXT * 200)["input_ids"]
    for count in tokens:
        ids = long_ids[:count]
        [(_, hidden, last)] = list(session.hidden_states([ids]))
        input_ids = torch.tensor(ids, device=head.weight.device)
        inputs = lens_inputs(hidden, last, head, lens)
        time_a, _ = timed(floor, inputs, head.weight)
        del inputs

        def lens_step() -> None:
            lens_statistics(lens_inputs(hidden, last, head, lens), head, input_ids, args.top_k)

        time_b, memory_b = timed(lens_step)
        needed = len(hidden) * count * facts["vocab_size"] * 4 * 3
        if needed <= naive_limit:
            time_c, memory_c = timed(naive, hidden, last, session, args.top_k)
            naive_cells = f"{time_c:.2f} | {time_a and time_b / time_a:.2f} | " \
                          f"{time_c / time_b:.2f} | {memory_b:.0f} | {memory_c:.0f}"
        else:
            naive_cells = (f"skipped (needs ~{size(needed)}) | {time_b / time_a:.2f} | – "
                           f"| {memory_b:.0f} | –")
        print(f"| {count} | {time_a:.2f} | {time_b:.2f} | {naive_cells} |", flush=True)
    if args.patchscope or args.smoke:
        patchscope(session, long_ids, tokens, args.top_k)


def patchscope(session: ModelSession, long_ids: list[int], tokens: list[int], top_k: int
               ) -> None:
    """The lens step (inputs + statistics) of the logit lens vs the patchscope, cached and
    not: the patchscope's extra cost is its forward passes through the upper blocks."""
    head = session.head
    lenses = {"logit": session.bind(LogitLens()),
              "cached": session.bind(PatchscopeLens()),
              "uncached": session.bind(PatchscopeLens(prefix_cache=False))}
    target = len(lenses["cached"].describe()["patchscope"]["target_ids"])
    print(f"\n## patchscope (target prompt: {target} tokens)\n")
    print("| tokens | logit lens s | patchscope s | no prefix cache s | patchscope / logit "
          "| no cache / cached |")
    print("|---:|---:|---:|---:|---:|---:|")
    for count in tokens:
        ids = long_ids[:count]
        [(_, hidden, last)] = list(session.hidden_states([ids]))
        input_ids = torch.tensor(ids, device=head.weight.device)
        times = {}
        for name, lens in lenses.items():
            times[name], _ = timed(lambda: lens_statistics(
                lens_inputs(hidden, last, head, lens), head, input_ids, top_k))
        print(f"| {count} | {times['logit']:.2f} | {times['cached']:.2f} | "
              f"{times['uncached']:.2f} | {times['cached'] / times['logit']:.1f} | "
              f"{times['uncached'] / times['cached']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
