"""The Python API, for notebooks: the lens on a model you already loaded.

    import lensreport
    result = lensreport.run_lens(model, tokenizer, "The quick brown fox jumps over the lazy",
                                 target=" dog")
    result                      # in Jupyter / VS Code: the site's interactive heatmap
    result.entropy              # numpy arrays, [layer, position]
    result.save("fox.json")     # the site's results document; list it under `results:`

The same head discovery, the same tiled lens and the same document as `lensreport build`,
and the same figure code (templates/_figure.html + assets/lensreport.js) as the site.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from markupsafe import Markup

from .errors import LensReportError
from .manifest import LENS_KINDS, MAX_TOP_K, LensSettings, ModelSpec, PromptSpec, SiteSettings
from .manifest import slugify
from .results import SCHEMA_VERSION, atomic_write, cache_key, dumps

_plotly_sent = False  # plotly.min.js is inlined into the first output of a kernel only
_output_ids = itertools.count(1)


def run_lens(model: Any, tokenizer: Any, text: str, *, target: str | None = None,
             top_k: int = 5, lens: str = "logit", model_name: str | None = None,
             prompt_name: str = "prompt") -> "LensResult":
    """The lens on one text with a loaded Hugging Face causal LM (any device, sharded too).

    ``lens`` is ``logit`` (final norm, then unembedding) or ``raw``; ``target`` is a token
    whose probability is tracked at every layer. Returns the document `lensreport build`
    writes for the same model and prompt.
    """
    from .engine import ModelSession
    from .models import LoadedModel, ResolvedModel, model_facts

    if lens not in LENS_KINDS:
        raise LensReportError(f"lens={lens!r}: expected one of {', '.join(LENS_KINDS)}")
    if not 1 <= top_k <= MAX_TOP_K:
        raise LensReportError(f"top_k={top_k}: expected 1 to {MAX_TOP_K}")
    reference = str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
    name = model_name or reference.rstrip("/").split("/")[-1] or "model"
    spec = ModelSpec(name=name, slug=slugify(name), reference=reference, revision=None,
                     dtype="auto", device="auto", lens=LensSettings((lens,), top_k),
                     final_norm=None, unembedding=None, trust_remote_code=False, note=None,
                     line=0)
    prompt = PromptSpec(name=prompt_name, slug=slugify(prompt_name), text=text, target=target,
                        note=None, line=0)
    device = str(model.get_input_embeddings().weight.device)
    resolved = ResolvedModel("memory", reference, None, f"memory:{reference}")
    facts = model_facts(spec, resolved, model, device)
    was_training = model.training
    model.eval()
    try:
        session = ModelSession.from_loaded(LoadedModel(spec, model, tokenizer, device, facts))
        encoded = session.prepare(prompt, Path("<run_lens>"))
        [(_, hidden, last)] = session.hidden_states([encoded])
        key = cache_key({"notebook": reference, "text": text, "target": target,
                         "lens_kind": lens, "top_k": top_k})
        document = session.run(prompt, encoded, key, hidden, last)
    finally:
        model.train(was_training)
    return LensResult(document)


@dataclass
class LensResult:
    """One (model, prompt) results document with NumPy access; displays as the heatmap.

    Arrays are indexed ``[layer, position]`` (``[layer, position, k]`` for top-k), layer 0 =
    embeddings, the last layer = the model's own output; see the README's "Results JSON".
    """

    document: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> "LensResult":
        return cls(read_document(Path(path)))

    def save(self, path: str | Path) -> Path:
        """Write the JSON document (list it under `results:` in a manifest to publish it)."""
        path = Path(path)
        atomic_write(path, dumps(self.document).encode("utf-8"))
        return path

    @property
    def model_name(self) -> str:
        return self.document["model"]["name"]

    @property
    def prompt(self) -> str:
        return self.document["prompt"]["text"]

    @property
    def tokens(self) -> list[str]:
        """Display strings of the input tokens."""
        return list(self.document["input_tokens"])

    @property
    def num_layers(self) -> int:
        """Rows of every array: the embeddings plus one per block."""
        return len(self.document["layers"])

    def _array(self, field: str, dtype: Any = np.float32) -> np.ndarray:
        """A field as an array; null (no next token at the last position) becomes NaN."""
        value = self.document.get(field)
        if value is None:
            raise AttributeError(f"this result has no {field} (no target was given)")
        return np.asarray(value, dtype=dtype)

    @property
    def entropy(self) -> np.ndarray:
        return self._array("entropy")

    @property
    def kl_to_final(self) -> np.ndarray:
        return self._array("kl_to_final")

    @property
    def topk_ids(self) -> np.ndarray:
        return self._array("topk_ids", np.int64)

    @property
    def topk_probs(self) -> np.ndarray:
        return self._array("topk_probs")

    @property
    def topk_tokens(self) -> np.ndarray:
        vocab = self.document["vocab"]
        return np.vectorize(lambda i: vocab[str(i)], otypes=[object])(self.topk_ids)

    @property
    def next_token_prob(self) -> np.ndarray:
        """NaN at the last position (there is no next input token)."""
        return self._array("next_token_prob")

    @property
    def target_prob(self) -> np.ndarray:
        return self._array("target_prob")

    @property
    def target_rank(self) -> np.ndarray:
        return self._array("target_rank", np.int64)

    def __repr__(self) -> str:
        return (f"LensResult(model={self.model_name!r}, prompt={self.prompt!r}, "
                f"layers={self.num_layers}, tokens={len(self.tokens)}, "
                f"lens={self.document['lens']['kind']!r})")

    def _repr_html_(self) -> str:
        return notebook_html([self])


def compare(results: Iterable[LensResult]) -> "Comparison":
    """Several results side by side in one notebook output (e.g. models on one prompt)."""
    return Comparison(list(results))


@dataclass
class Comparison:
    results: list[LensResult]

    def _repr_html_(self) -> str:
        return notebook_html(self.results)


def notebook_html(results: list[LensResult]) -> str:
    """The site's figure markup and script for a notebook output, plotly.js inlined once."""
    global _plotly_sent
    from .site import Figure, builtin_templates, environment, plotly_js

    env = environment(None)
    figures = []
    for number, result in enumerate(results):
        document = result.document
        model = spec_from_document(document, f"{number}")
        prompt = prompt_from_document(document, f"{number}")
        figures.append(Figure(model, prompt, ((model.lens.kind, document),)))
    container = f"lensreport-output-{next(_output_ids)}"
    include_plotly = not _plotly_sent
    html = env.get_template("notebook.html").render(
        figures=figures, site=SiteSettings(), container_id=container,
        # Our own packaged scripts (trusted code, not data), hence Markup.
        plotly_js=Markup(plotly_js().read_text(encoding="utf-8")) if include_plotly else "",
        lensreport_js=Markup((builtin_templates() / "assets" / "lensreport.js").read_text("utf-8")))
    _plotly_sent = True
    return html


def spec_from_document(document: dict[str, Any], suffix: str = "") -> ModelSpec:
    model = document["model"]
    lens = document["lens"]
    name = model.get("name") or "model"
    return ModelSpec(name=name, slug=slugify(name) + (f"-{suffix}" if suffix else ""),
                     reference=model.get("reference") or name, revision=model.get("revision"),
                     dtype=model.get("dtype") or "auto", device=model.get("device") or "auto",
                     lens=LensSettings((lens.get("kind", "logit"),), int(lens.get("top_k", 5))),
                     final_norm=None, unembedding=None, trust_remote_code=False, note=None,
                     line=0)


def prompt_from_document(document: dict[str, Any], suffix: str = "") -> PromptSpec:
    prompt = document["prompt"]
    name = prompt.get("name") or "prompt"
    return PromptSpec(name=name, slug=slugify(name) + (f"-{suffix}" if suffix else ""),
                      text=prompt["text"], target=prompt.get("target"), note=None, line=0)


REQUIRED_FIELDS = ("model", "prompt", "lens", "input_ids", "layers", "topk_ids", "topk_probs",
                   "entropy", "kl_to_final", "vocab")


def read_document(path: Path) -> dict[str, Any]:
    """A saved results document, checked enough that a page can be drawn from it."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LensReportError(f"{path}: results file not found") from None
    except (OSError, ValueError) as exc:
        raise LensReportError(f"{path}: not a lensreport results file "
                              f"({str(exc).splitlines()[0][:100]})") from None
    if not isinstance(document, dict) or document.get("schema_version") != SCHEMA_VERSION:
        raise LensReportError(f"{path}: not a lensreport results file of schema version "
                              f"{SCHEMA_VERSION}; save it again with this version")
    missing = [field for field in REQUIRED_FIELDS if field not in document]
    if missing:
        raise LensReportError(f"{path}: results file lacks {', '.join(missing)}")
    return document
