"""Fitting a Jacobian lens on a corpus (`lensreport fit-lens --kind jacobian`).

The reference estimator (as TransformerLens 4.3 documents and implements it): for one prompt
of T tokens with valid positions V = skip_first … T-2,

    J_l = mean_{t∈V} Σ_{t'∈V} ∂h_final[t'] / ∂h_l[t]

where h_l is the output of block l as block l + 1 reads it (models/states.py: the lens's row
l + 1, whatever the family's ``hidden_states``) and h_final the output of the last block
before the final norm (the final norm's input). Causality makes the t' < t terms zero.
Row k of every J_l comes from one backward pass with a one-hot cotangent on output
dimension k at every valid position; the prompt is replicated ``dim_batch`` times in one
batch so that one backward pass gives ``dim_batch`` rows (⌈d / dim_batch⌉ passes per prompt).
J = the mean over prompts (each prompt weighs the same). Model parameters stay frozen;
gradients are in the model's dtype and summed in float32.

Prompts are the corpus's documents in order, each its first ``context`` tokens as the
tokenizer encodes it by default; a document of T ≤ skip_first + 1 tokens is skipped and not
counted. ``--shard K/N`` fits prompts K-1, K-1+N, … of that list and writes running sums
(the reference's checkpoint form); :func:`merge` adds the shards' sums into one lens.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from ..._version import __version__
from ...errors import LensReportError
from ...results.identity import file_digest
from ...models.loading import ModelRequest
from ...models.states import block_inputs
from ...models.references import ResolvedModel
from ...progress import progress
from ...results.concurrency import cache_lock
from .. import corpus as corpora
from .. import jacobian_format
from ..engine import ModelSession
from .settings import JacobianSettings

log = logging.getLogger("lensreport")


def prompts(source: corpora.CorpusSource, tokenizer: Any, settings: JacobianSettings
            ) -> Iterator[tuple[int, list[int]]]:
    """(index in the prompt list, token ids) of the first ``settings.prompts`` usable
    documents, in corpus order."""
    index = 0
    for text in corpora.documents(source):
        if index >= settings.prompts:
            return
        ids = tokenizer(text)["input_ids"][:settings.context]
        if len(ids) <= settings.skip_first + 1:
            continue  # no valid position: skipped, not counted
        yield index, ids
        index += 1


class _FinalInput:
    """Captures the last block's output (the final norm's input) during a forward pass."""

    def __init__(self, session: ModelSession) -> None:
        self.value: torch.Tensor | None = None
        norms = session.head.norms
        self._handle = norms[0].register_forward_pre_hook(self._keep, with_kwargs=True) \
            if norms else None

    def _keep(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.value = args[0] if args else next(iter(kwargs.values()))

    def get(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """The captured input, or the last hidden state of a model without a final norm."""
        return self.value if self._handle is not None else last_hidden

    def close(self) -> None:
        if self._handle is not None:
            self._handle.remove()


@contextmanager
def replicated_graph(session: ModelSession, input_ids: list[int], source_layers: list[int],
                     batch: int) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
    """The forward pass a fit differentiates: the prompt replicated ``batch`` times, with a
    graph from the embeddings' output on. Yields (target: the last block's output, sources:
    the outputs of blocks ``source_layers``), inside ``torch.enable_grad()``."""
    model = session.loaded.model
    ids = torch.tensor([input_ids], device=session.loaded.device).expand(batch, len(input_ids))
    # Parameters are frozen: the embeddings' output is made to require a gradient, so the
    # forward pass records the graph from there on (the same modules and path as the lens).
    hook = model.get_input_embeddings().register_forward_hook(
        lambda module, args, out: out.requires_grad_(True))
    final = _FinalInput(session)
    try:
        with torch.enable_grad(), block_inputs(model, session.head) as inputs:
            output = model.base_model(input_ids=ids, output_hidden_states=True,
                                      use_cache=False)
            target = final.get(output.last_hidden_state)
            if target is None:
                raise LensReportError(f"model '{session.name}': its final norm did not run in "
                                      "the backbone's forward pass, so the last block's "
                                      "output cannot be read for a Jacobian lens")
            # Block l's output as block l + 1 reads it (models/states.py): the lens's row.
            sources = [inputs.get(layer + 1, target) for layer in source_layers]
            if not all(source.requires_grad for source in sources):
                raise LensReportError(f"model '{session.name}': its hidden states are not "
                                      "computed from its input embeddings' output, so a "
                                      "Jacobian lens cannot be fitted for it")
            yield target, sources
    finally:
        hook.remove()
        final.close()


def prompt_jacobians(session: ModelSession, input_ids: list[int], source_layers: list[int],
                     skip_first: int, dim_batch: int) -> dict[int, torch.Tensor]:
    """One prompt's J_l (float32, [d, d], rows = output dimensions) for every source layer."""
    width = session.hidden_size
    valid = torch.arange(skip_first, len(input_ids) - 1)
    batch = min(dim_batch, width)
    with replicated_graph(session, input_ids, source_layers, batch) as (target, sources):
        # Rows kept on the CPU (float32), as the reference does: (L-1)·d² floats per
        # prompt would not fit next to a big model on its device. Indices live where
        # each tensor does (device_map may spread the layers over devices).
        jacobians = {layer: torch.zeros(width, width) for layer in source_layers}
        rows = torch.arange(batch, device=target.device)
        on_target = valid.to(target.device)
        cotangent = torch.zeros_like(target)
        for start in range(0, width, batch):
            count = min(batch, width - start)
            cotangent.zero_()
            cotangent[rows[:count, None], on_target[None, :], start + rows[:count, None]] = 1
            grads = torch.autograd.grad(target, sources, cotangent,
                                        retain_graph=start + batch < width)
            for layer, grad in zip(source_layers, grads):
                jacobians[layer][start:start + count] = \
                    grad[:count, valid.to(grad.device)].float().mean(1).cpu()
    return jacobians


def _metadata(session: ModelSession, source: corpora.CorpusSource,
              settings: JacobianSettings) -> dict[str, Any]:
    """What the lens records about its fit; resuming and merging require the same."""
    config = session.loaded.model.config
    # "model_id", not "model_name": TransformerLens refuses a lens whose model_name differs
    # from its own name for the model (a folder path, for a local checkpoint). The revision
    # is the resolved commit (None for local files), which TransformerLens compares with the
    # model's; the one asked for is kept beside it.
    corpus = source.describe()
    if source.path is not None:
        corpus_digest = file_digest(source.path)
    else:
        corpus_digest = None
    return {"model_id": session.reference,
            "model_revision": getattr(config, "_commit_hash", None),
            "requested_revision": session.loaded.request.revision,
            "corpus": corpus, "corpus_digest": corpus_digest, "prompts": settings.prompts,
            "context": settings.context, "skip_first": settings.skip_first,
            "dim_batch": settings.dim_batch, "estimator": "jacobian_lens",
            "fit_dtype": str(session.head.weight.dtype).removeprefix("torch."),
            "target_layer": session.num_layers - 1, "fitted_by": f"lensreport {__version__}"}


# Settings that do not change the numbers: shards fitted with other values still merge.
_MERGE_FREE = ("shard", "dim_batch", "fitted_by")


def fit_lens(request: ModelRequest, resolved: ResolvedModel, source: corpora.CorpusSource,
             out: Path, settings: JacobianSettings) -> dict[str, Any]:
    """Fit (resuming from ``out``'s checkpoint), write the lens or the shard's sums; returns
    a report (prompts fitted, seconds, the file written).

    One process at a time fits into ``out`` (its lock); one started meanwhile waits, then
    resumes from the checkpoint the other left, which finishes at once where it was done."""
    with cache_lock(out, f"the Jacobian lens {out}") as held:
        return _fit(request, resolved, source, out, settings, held.waited)


def _fit(request: ModelRequest, resolved: ResolvedModel, source: corpora.CorpusSource,
         out: Path, settings: JacobianSettings, waited: bool) -> dict[str, Any]:
    session = ModelSession.open(request, resolved)
    layers, width = session.num_layers, session.hidden_size
    if layers < 2:
        raise LensReportError(f"model '{request.name}' has {layers} layer(s): a Jacobian lens "
                              "needs at least 2 (it maps layers 0 … L-2 to the last)")
    source_layers = list(range(layers - 1))
    context_limit = session.facts.get("max_context")
    if context_limit and settings.context > context_limit:
        raise LensReportError(f"--context {settings.context} is longer than model "
                              f"'{request.name}' accepts ({context_limit} tokens)")
    shard, shards = settings.shard
    metadata = {**_metadata(session, source, settings),
                **({"shard": f"{shard}/{shards}"} if shards > 1 else {})}
    if metadata["fit_dtype"] in ("float16", "bfloat16"):
        log.warning("fitting in %s (the model's dtype): gradients lose precision; "
                    "dtype: float32 on the model gives an exact lens", metadata["fit_dtype"])
    checkpoint = out.with_name(out.name + ".checkpoint") if shards == 1 else out
    if waited and shards == 1 and out.is_file() and not checkpoint.is_file():
        written = jacobian_format.read(out)
        if written.metadata == jacobian_format.plain(metadata):
            log.info("another process fitted %s with these settings meanwhile; using it", out)
            return {"prompts": written.n_prompts, "seconds": 0.0, "out": str(out),
                    "shard": [shard, shards],
                    "passes_per_prompt": -(-width // min(settings.dim_batch, width))}
    sums = {layer: torch.zeros(width, width) for layer in source_layers}  # CPU, float32
    done, next_index = 0, 0
    if checkpoint.is_file():
        saved = jacobian_format.read_checkpoint(checkpoint)
        recorded = dict(saved.get("metadata") or {})
        recorded.pop("planned", None)
        if recorded != jacobian_format.plain(metadata):
            raise LensReportError(f"{checkpoint} was written with other settings or for "
                                  "another model; delete it or use another --out")
        sums = {int(k): v.float() for k, v in saved["jacobian_sum"].items()}
        done, next_index = int(saved["n_done"]), int(saved["next_idx"])
        log.info("resuming after %d prompt(s)", done)
    planned = [(index, ids) for index, ids in prompts(source, session.loaded.tokenizer, settings)
               if index % shards == shard - 1]
    if not planned:
        raise LensReportError(f"corpus {source.describe()}: no document longer than "
                              f"skip_first + 1 = {settings.skip_first + 1} tokens"
                              + (f" for shard {shard}/{shards}" if shards > 1 else ""))
    started = time.perf_counter()
    bar = progress(total=len(planned), initial=done, desc="fit-lens", unit="prompt")

    def save(complete: bool = False) -> None:
        jacobian_format.write_checkpoint(checkpoint, sums, done, next_index, layers - 1,
                                         settings.skip_first,
                                         {**metadata, "planned": len(planned)}, complete)

    for index, ids in planned:
        if index < next_index:
            continue  # resumed: fitted already
        for layer, matrix in prompt_jacobians(session, ids, source_layers, settings.skip_first,
                                              settings.dim_batch).items():
            sums[layer] += matrix
        done, next_index = done + 1, index + 1
        bar.update(1)
        if done % settings.checkpoint_every == 0:
            save()
    bar.close()
    seconds = time.perf_counter() - started
    if shards > 1:
        save(complete=True)  # the shard's sums: `fit-lens --merge` adds them into the lens
    else:
        jacobian_format.write(out, {layer: s / done for layer, s in sums.items()}, done,
                              metadata)
        checkpoint.unlink(missing_ok=True)
    return {"prompts": done, "seconds": seconds, "out": str(out), "shard": [shard, shards],
            "passes_per_prompt": -(-width // min(settings.dim_batch, width))}


def merge(parts: list[Path], out: Path) -> dict[str, Any]:
    """Add the running sums of shards 1 … N (each once) into one lens file."""
    payloads = [jacobian_format.read_checkpoint(part) for part in parts]
    unfinished = [str(part) for part, p in zip(parts, payloads) if not p.get("complete")]
    if unfinished:
        raise LensReportError(f"{unfinished[0]}: this shard has not finished (its fit was "
                              "interrupted or is still running); run its fit-lens command "
                              "again to complete it, then merge")
    common = [{k: v for k, v in p.get("metadata", {}).items()
               if k not in _MERGE_FREE + ("planned",)} for p in payloads]
    if any(meta != common[0] for meta in common[1:]):
        raise LensReportError("the shards were fitted with other settings or for other "
                              "models; merge shards of one `fit-lens --shard K/N` run")
    shards = sorted(str(p.get("metadata", {}).get("shard", "1/1")) for p in payloads)
    total = {s.split("/")[1] for s in shards}
    expected = sorted(f"{k}/{n}" for n in total for k in range(1, int(n) + 1))
    if len(total) != 1 or shards != expected:
        raise LensReportError(f"shards {', '.join(shards)}: merge every shard 1 … N of one run "
                              "exactly once")
    done = sum(int(p["n_done"]) for p in payloads)
    sums = {int(k): v.float().clone() for k, v in payloads[0]["jacobian_sum"].items()}
    for payload in payloads[1:]:
        for layer, matrix in payload["jacobian_sum"].items():
            sums[int(layer)] += matrix.float()
    jacobian_format.write(out, {layer: s / done for layer, s in sums.items()}, done, common[0])
    return {"prompts": done, "out": str(out), "shards": len(parts)}
