"""Jacobian-lens fitting per prompt vs its floor (and TransformerLens 4.3). Run by hand:

    .venv/bin/python benchmarks/jacobian_benchmark.py --model smollm2 --tokens 32 --prompts 2
    .venv/bin/python benchmarks/jacobian_benchmark.py --smoke     (seconds, a tiny random model)

For each prompt, in one process (compare ratios, not absolute times, on a shared machine):
  (a) floor: the bare model's forward pass with a graph on the prompt replicated dim_batch
      times, then the same ⌈d / dim_batch⌉ backward passes to the same source tensors
      (random cotangents; nothing kept)
  (b) fit:   lensreport's prompt_jacobians (what `fit-lens --kind jacobian` runs per prompt)
  (c) tl:    TransformerLens 4.3's JacobianLens.fit on the same text, where .venv/peers has it
             (run in a subprocess with its import stubs, on the model's weights folder)
and the ratio b/a (target ≤ 1.2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _shared import REPO, SMOKE_HELP, TEXT, open_session, smoke_model
from lensreport.lens.fit.jacobian import prompt_jacobians, replicated_graph


def floor(session, ids: list[int], layers: list[int], dim_batch: int) -> None:
    width = session.hidden_size
    batch = min(dim_batch, width)
    with replicated_graph(session, ids, layers, batch) as (target, sources):
        cotangent = torch.randn_like(target)
        for start in range(0, width, batch):
            torch.autograd.grad(target, sources, cotangent, retain_graph=start + batch < width)


TL_SCRIPT = """
import json, os, sys, time, torch
os.environ["HF_HUB_OFFLINE"] = "1"
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.tools.analysis import JacobianLens
folder, text, skip, context, dim_batch, repeats = sys.argv[1:7]
bridge = TransformerBridge.boot_transformers(folder, device="cpu", dtype=torch.float32).eval()
times = []
for _ in range(int(repeats)):
    start = time.perf_counter()
    JacobianLens.fit(bridge, [text], corpus="bench", skip_first_positions=int(skip),
                     max_seq_len=int(context), dim_batch=int(dim_batch), show_progress=False)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def transformer_lens(folder: str, text: str, skip: int, context: int, dim_batch: int,
                     repeats: int) -> list[float] | str:
    peers = REPO / ".venv" / "peers"
    if not (peers / "transformer_lens").is_dir():
        return "not installed (make test installs it into .venv/peers)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "tests" / "peers" / "stubs"), str(peers)])}
    run = subprocess.run([sys.executable, "-c", TL_SCRIPT, folder, text, str(skip), str(context),
                          str(dim_batch), str(repeats)], capture_output=True, text=True, env=env)
    if run.returncode != 0:
        return "failed: " + (run.stderr.strip().splitlines() or ["?"])[-1][:120]
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tokens", type=int, default=32, help="prompt length")
    parser.add_argument("--skip-first", type=int, default=16)
    parser.add_argument("--dim-batch", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=2, help="repeats of each measurement")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        args.model = smoke_model(Path(tempfile.mkdtemp()) / "tiny")
        args.tokens, args.skip_first, args.prompts = 24, 4, 1
    session = open_session(args.model, args.device)
    tokenizer = session.loaded.tokenizer
    ids = tokenizer(TEXT * 20)["input_ids"][:args.tokens]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    layers = list(range(session.num_layers - 1))
    passes = -(-session.hidden_size // min(args.dim_batch, session.hidden_size))
    label = "tiny-llama (smoke)" if args.smoke else args.model
    print(f"# {label}: {session.num_layers} layers, d {session.hidden_size}, {len(ids)} tokens, "
          f"skip_first {args.skip_first}, dim_batch {args.dim_batch}: {passes} backward "
          f"passes per prompt, {session.loaded.device}")
    timings: dict[str, list[float]] = {"floor": [], "fit": []}
    for _ in range(args.prompts):  # interleaved, so drift on a shared machine hits both
        start = time.perf_counter()
        floor(session, ids, layers, args.dim_batch)
        timings["floor"].append(time.perf_counter() - start)
        start = time.perf_counter()
        prompt_jacobians(session, ids, layers, args.skip_first, args.dim_batch)
        timings["fit"].append(time.perf_counter() - start)
    a, b = min(timings["floor"]), min(timings["fit"])
    folder = session.loaded.model.config._name_or_path
    tl = transformer_lens(folder, text, args.skip_first, args.tokens, args.dim_batch,
                          args.prompts)
    print("| (a) floor s/prompt | (b) fit s/prompt | b/a | (c) TransformerLens s/prompt | c/b |")
    print("|---|---|---|---|---|")
    c = f"{min(tl):.3f}" if isinstance(tl, list) else tl
    cb = f"{min(tl) / b:.2f}" if isinstance(tl, list) else "–"
    print(f"| {a:.3f} | {b:.3f} | {b / a:.2f} | {c} | {cb} |")


if __name__ == "__main__":
    main()
