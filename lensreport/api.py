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
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
from markupsafe import Markup

from .errors import LensReportError
from .lens.kinds import Lens, lens_class
from .lens.settings import ROW_SETTINGS
from .manifest.parse import MAX_TOP_K
from .manifest.specs import SiteSettings
from .results.documents import dumps, read_document
from .results.files import atomic_write
from .results.identity import cache_key
from .slugs import slugify

if TYPE_CHECKING:
    from .models.prompts import PromptRequest

_plotly_sent = False  # plotly.min.js is inlined into the first output of a kernel only
_output_ids = itertools.count(1)
# What head discovery found per model object (weakly held: a deleted model is forgotten),
# so a second run_lens on the same model runs no probe forward pass.
_readings: "weakref.WeakKeyDictionary[Any, tuple[int, Any]]" = weakref.WeakKeyDictionary()


def run_lens(model: Any, tokenizer: Any, text: str, *, target: str | None = None,
             top_k: int = 5, lens: str | Lens = "logit", tuned: str | Path | None = None,
             jacobian: str | Path | None = None, model_name: str | None = None,
             prompt_name: str = "prompt", targets: dict[str, Any] | None = None,
             chat: bool = False, messages: list[dict[str, str]] | None = None,
             generate: int = 0, decompose: bool = True, rows: str = "block"
             ) -> "LensResult":
    """The lens on one text with a loaded Hugging Face causal LM (any device, sharded too).

    ``lens`` is a lens kind's name (``logit``: final norm, then unembedding; ``raw``;
    ``tuned`` and ``jacobian`` read the lens given as ``tuned=`` (a lens folder) or
    ``jacobian=`` (a J-lens file), else the published lens of the model's Hub id) or a Lens
    object; ``target`` is a token whose probability is tracked at every layer; ``targets``
    are named token groups (``{"animals": [" dog", " cat"], "french": {"word": "chien"}}``).
    ``chat=True`` formats ``text`` as a user message with the tokenizer's chat template (or
    give ``messages=[{"role": ..., "content": ...}]``); ``generate=N`` continues the prompt
    greedily by N tokens and lenses prompt and continuation; ``decompose=False`` leaves out
    the direct logit attribution; ``rows="sublayer"`` adds a row after each block's
    attention (sequential blocks). Returns the document
    `lensreport build` writes for the same model and prompt.
    """
    from .lens.engine import ModelSession, discover
    from .models.prompts import PromptError
    from .models.loading import LoadedModel, ModelRequest, model_facts
    from .models.references import ResolvedModel

    if rows not in ROW_SETTINGS:
        raise LensReportError(f"rows={rows!r}: expected {' or '.join(map(repr, ROW_SETTINGS))}")
    if not 1 <= top_k <= MAX_TOP_K:
        raise LensReportError(f"top_k={top_k}: expected 1 to {MAX_TOP_K}")
    reference = str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
    sources = {kind: source for kind, source in (("tuned", tuned), ("jacobian", jacobian))
               if source is not None}
    chosen = lens if isinstance(lens, Lens) else _lens_named(lens, reference, sources)
    name = model_name or reference.rstrip("/").split("/")[-1] or "model"
    request = ModelRequest(name=name, reference=reference, slug=slugify(name))
    device = str(model.get_input_embeddings().weight.device)
    resolved = ResolvedModel("memory", reference, None, f"memory:{reference}")
    facts = model_facts(request, resolved, model, device)
    was_training = model.training
    model.eval()
    try:
        known = _readings.get(model)
        reading = known[1] if known and known[0] == id(tokenizer) else None
        if reading is None:
            reading = discover(model, tokenizer, device)
            _readings[model] = (id(tokenizer), reading)
        session = ModelSession.from_loaded(LoadedModel(request, model, tokenizer, device, facts),
                                           reading)
        request = _prompt_request(prompt_name, text, target, targets, chat, messages, generate)
        try:
            encoded = session.prepare(request)
        except PromptError as exc:
            raise LensReportError(str(exc)) from None
        session.generate(encoded)
        [(_, hidden, last)] = session.hidden_states([encoded.input_ids], [prompt_name],
                                                    parts=decompose or rows == "sublayer")
        key = cache_key({"notebook": reference, **request.identity(),
                         "lens_kind": chosen.name, "top_k": top_k, "decompose": decompose,
                         "rows": rows})
        document = session.run(encoded, key, hidden, last, chosen, top_k, decompose,
                               rows == "sublayer")
    finally:
        model.train(was_training)
    return LensResult(document)


def _prompt_request(name: str, text: str, target: str | None, targets: dict[str, Any] | None,
                    chat: bool, messages: list[dict[str, str]] | None, generate: int
                    ) -> "PromptRequest":
    """run_lens's prompt arguments, checked as the manifest checks a prompt entry."""
    from .models.prompts import PromptRequest, TokenGroup

    groups = []
    for group, members in (targets or {}).items():
        if isinstance(members, dict) and set(members) == {"word"} and members["word"]:
            groups.append(TokenGroup(str(group), word=str(members["word"]).strip()))
        elif isinstance(members, (list, tuple)) and members and all(
                isinstance(m, str) and m for m in members):
            groups.append(TokenGroup(str(group), tokens=tuple(members)))
        else:
            raise LensReportError(f"targets[{group!r}]: expected a list of tokens or "
                                  f"{{'word': ...}}, got {members!r}")
    if chat and messages is not None:
        raise LensReportError("give chat=True (text as the user's message) or messages=, "
                              "not both")
    chat_messages = None
    if messages is not None:
        if not messages or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                   and isinstance(m.get("content"), str) for m in messages):
            raise LensReportError("messages: expected a non-empty list of "
                                  "{'role': ..., 'content': ...}")
        chat_messages = tuple((m["role"], m["content"]) for m in messages)
    elif chat:
        chat_messages = (("user", text),)
    if not isinstance(generate, int) or isinstance(generate, bool) or generate < 0:
        raise LensReportError(f"generate={generate!r}: expected a number of tokens (0: none)")
    return PromptRequest(name=name, text=text, slug=slugify(name), target=target,
                         groups=tuple(groups), messages=chat_messages, generate=generate)


def _lens_named(name: str, reference: str, sources: dict[str, str | Path]) -> Lens:
    """A lens kind by name, from the source given for it (``tuned=``, ``jacobian=``) or
    with its default settings (a published lens from the Hub)."""
    try:
        cls = lens_class(name)
    except LensReportError as exc:
        raise LensReportError(f"lens={name!r}: {exc}") from None
    unused = [kind for kind in sources if kind != cls.name]
    if unused:
        raise LensReportError(f"{unused[0]}= is a source for lens={unused[0]!r}, not for "
                              f"lens={name!r}")
    return cls.for_model(reference, sources.get(cls.name))


@dataclass
class LensResult:
    """One (model, prompt) results document with NumPy access; displays as the heatmap.

    Arrays are indexed ``[layer, position]`` (``[layer, position, k]`` for top-k), layer 0 =
    embeddings, the last layer = the model's own output; see the README's "Results JSON".

    A lens need not cover every row (the Jacobian lens has nothing for the embeddings row);
    ``rows`` lists the covered ones and ``covered`` is the same as a boolean mask. Every array
    keeps all ``num_rows`` rows: an uncovered row is NaN in the float arrays (``entropy``,
    ``kl_to_final``, ``topk_probs``, ``next_token_prob``, ``target_prob``), -1 in the integer
    ones (``topk_ids``, ``target_rank``) and None in ``topk_tokens`` — never another lens's
    numbers. Select covered rows with ``result.entropy[result.covered]``.
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
        """L, the number of blocks (the model's facts say the same)."""
        return len(self.document["layers"]) - 1

    @property
    def num_rows(self) -> int:
        """Rows of every array: the embeddings plus one per block (L + 1)."""
        return len(self.document["layers"])

    @property
    def rows(self) -> list[int]:
        """The rows the lens covers, ascending (every row for the logit lens); ends with L."""
        rows = self.document["lens"].get("rows")
        return list(range(self.num_rows)) if rows is None else list(rows)

    @property
    def covered(self) -> np.ndarray:
        """A boolean mask over rows: True where the lens has numbers."""
        mask = np.zeros(self.num_rows, dtype=bool)
        mask[self.rows] = True
        return mask

    def _array(self, field: str, dtype: Any = np.float32) -> np.ndarray:
        """A field as an array; null (no next token at the last position) becomes NaN, and
        a row the lens does not cover (a single null) a row of NaN (-1 for integer fields)."""
        value = self.document.get(field)
        if value is None:
            raise AttributeError(f"this result has no {field} (no target was given)")
        return self._rows(value, dtype)

    @staticmethod
    def _rows(value: list[Any], dtype: Any) -> np.ndarray:
        """Per-row lists as an array, an uncovered row (null) as NaN (-1 for integers)."""
        covered = [row for row in value if row is not None]
        shape = np.asarray(covered[0], dtype=object).shape  # the last row is always covered
        integer = np.issubdtype(np.dtype(dtype), np.integer)
        out = np.full((len(value), *shape), -1 if integer else np.nan, dtype=dtype)
        for index, row in enumerate(value):
            if row is not None:
                out[index] = np.asarray(row, dtype=dtype)
        return out

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
        """Display strings of ``topk_ids``; None at rows the lens does not cover."""
        vocab = self.document["vocab"]
        return np.vectorize(lambda i: None if i < 0 else vocab[str(i)],
                            otypes=[object])(self.topk_ids)

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

    @property
    def generated_from(self) -> int | None:
        """Index of the first generated token in ``tokens`` (None: nothing was generated)."""
        return self.document.get("generated_from")

    @property
    def group_names(self) -> list[str]:
        """The prompt's token groups, in the order they were given."""
        return [group["name"] for group in self.document.get("target_groups") or []]

    def _group(self, name: str) -> dict[str, Any]:
        for group in self.document.get("target_groups") or []:
            if group["name"] == name:
                return group
        raise KeyError(f"no token group {name!r}; this result has {self.group_names}")

    def group_prob(self, name: str) -> np.ndarray:
        """Summed probability of the group's tokens, [layer, position] (NaN: uncovered row)."""
        return self._rows(self._group(name)["prob"], np.float32)

    def group_rank(self, name: str) -> np.ndarray:
        """Best 1-based rank among the group's tokens, [layer, position] (-1: uncovered row)."""
        return self._rows(self._group(name)["rank"], np.int64)

    def __repr__(self) -> str:
        return (f"LensResult(model={self.model_name!r}, prompt={self.prompt!r}, "
                f"rows={self.num_rows}, tokens={len(self.tokens)}, "
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


@dataclass(frozen=True)
class _Named:
    """A model or prompt as the figure template names it (name, slug)."""

    name: str
    slug: str


def notebook_html(results: list[LensResult]) -> str:
    """The site's figure markup and script for a notebook output, plotly.js inlined once."""
    global _plotly_sent
    from .site.pages import Figure, builtin_templates, environment, plotly_js

    env = environment(None)
    figures = []
    for number, result in enumerate(results):
        document = result.document
        model_name = document["model"].get("name") or "model"
        prompt_name = document["prompt"].get("name") or "prompt"
        figures.append(Figure(_Named(model_name, f"{slugify(model_name)}-{number}"),
                              _Named(prompt_name, f"{slugify(prompt_name)}-{number}"),
                              ((document["lens"]["kind"], document),)))
    container = f"lensreport-output-{next(_output_ids)}"
    include_plotly = not _plotly_sent
    html = env.get_template("notebook.html").render(
        figures=figures, site=SiteSettings(), container_id=container,
        # Our own packaged scripts (trusted code, not data), hence Markup.
        plotly_js=Markup(plotly_js().read_text(encoding="utf-8")) if include_plotly else "",
        lensreport_js=Markup((builtin_templates() / "assets" / "lensreport.js").read_text("utf-8")),
        attribution_js=Markup((builtin_templates() / "assets" / "attribution.js").read_text(
            "utf-8")))
    _plotly_sent = True
    return html
