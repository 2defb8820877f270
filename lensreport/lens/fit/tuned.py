"""Fitting a tuned lens on a corpus (`lensreport train-lens`).

The recipe of Belrose et al. (2023) and the tuned-lens library: one translator per layer,
zero-initialised (so training starts at the logit lens), loss = Σ over layers of the mean
KL(final ‖ lens) over tokens, SGD with Nesterov momentum 0.9 (learning rate lr_scale·(1-0.9)),
weight decay 1e-3, gradient norm clipped to 1, linear decay to zero over a fixed token
budget. The model is frozen.

The full-vocabulary KL makes the unembedding the cost: per layer and chunk of positions one
matmul forward and one back (the unembedding itself gets no gradient), with bounded memory
(a chunk of logits at a time). The first windows of the corpus are held out and measured
before and after training with the corpus-curve code, for the training report.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import torch

from ...errors import LensReportError
from ...models.loading import ModelRequest
from ...models.references import ResolvedModel
from ...progress import progress
from ...results.concurrency import cache_lock, replace_file
from .. import corpus as corpora
from .. import tuned_format
from ..curves import CorpusSums, measure
from ..engine import ModelSession
from ..kinds import Lens, LogitLens, TunedLens
from .settings import TrainSettings

log = logging.getLogger("lensreport")
LOGITS_PER_CHUNK = 1 << 24  # float32 logits held at once while training (64 MB)
MAX_GRAD_NORM = 1.0  # as the tuned-lens library clips; residual streams can be large


def train_lens(request: ModelRequest, resolved: ResolvedModel,
               source: corpora.CorpusSource, out: Path, settings: TrainSettings
               ) -> dict[str, Any]:
    """Train, checkpoint, write the lens folder and its report; returns the report.

    One process at a time trains into ``out`` (the lock of its checkpoint); one started
    meanwhile waits, then uses the lens the other wrote with these settings, or resumes
    from its checkpoint."""
    with cache_lock(out / "checkpoint.pt", f"the tuned lens in {out}") as held:
        if held.waited:
            try:
                report = json.loads((out / "training-report.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                report = None
            if isinstance(report, dict) and report.get("settings") == asdict(settings) and \
                    report.get("corpus") == source.describe() and \
                    report.get("model") == request.name:
                log.info("another process trained %s with these settings meanwhile; using it",
                         out)
                return report
        return _train(request, resolved, source, out, settings)


def _train(request: ModelRequest, resolved: ResolvedModel, source: corpora.CorpusSource,
           out: Path, settings: TrainSettings) -> dict[str, Any]:
    torch.manual_seed(settings.seed)
    session = ModelSession.open(request, resolved)
    head = session.head.in_float32()
    # Translators act on the residual stream (hidden_size), which a final projection (OPT's
    # project_out) may map to another width before the unembedding.
    layers, width = session.num_layers, session.hidden_size
    device = head.weight.device
    translators = torch.nn.ModuleList(
        torch.nn.Linear(width, width, device=device, dtype=torch.float32) for _ in range(layers))
    for translator in translators:
        torch.nn.init.zeros_(translator.weight)
        torch.nn.init.zeros_(translator.bias)
    optimizer = torch.optim.SGD(translators.parameters(),
                                lr=settings.lr_scale * (1 - settings.momentum),
                                momentum=settings.momentum, nesterov=True,
                                weight_decay=settings.weight_decay)
    base_lr = settings.lr_scale * (1 - settings.momentum)
    checkpoint = out / "checkpoint.pt"
    state = {"step": 0, "tokens": 0, "settings": asdict(settings), "losses": []}
    if checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        if saved.get("settings") != state["settings"]:
            raise LensReportError(f"{checkpoint} was written with other settings; delete it "
                                  "or use another --out")
        translators.load_state_dict(saved["translators"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        log.info("resuming after step %d (%d of %d tokens)", state["step"], state["tokens"],
                 settings.tokens)

    tokenizer = session.loaded.tokenizer
    # The first held_out_tokens scored positions are never trained on; training takes the
    # windows after them, exactly `tokens` positions (the last window cut to fit).
    held_out = list(corpora.windows(source, tokenizer, settings.context,
                                    settings.held_out_tokens)) if settings.held_out_tokens else []
    windows = list(itertools.islice(
        corpora.windows(source, tokenizer, settings.context,
                        settings.held_out_tokens + settings.tokens + settings.context),
        len(held_out), None))
    # Shuffled with the seed, as the tuned-lens library shuffles its data: the same seed
    # gives the same lens, another seed another one.
    random.Random(settings.seed).shuffle(windows)
    training = _exactly(iter(windows), settings.tokens)
    first = next(training, None)
    if first is None:
        raise LensReportError(f"corpus {source.describe()} has no text left to train on after "
                              f"{settings.held_out_tokens} held-out tokens")
    before = _evaluate(session, held_out, LogitLens()) if held_out else None
    batches = _batches(itertools.chain([first], training), settings.tokens_per_step)
    started = time.perf_counter()
    bar = progress(total=settings.tokens, initial=state["tokens"], desc="train-lens",
                   unit="tok")
    for step, batch in enumerate(batches):
        if step < state["step"]:
            continue  # resumed: these windows were trained on already
        # Linear decay over the token budget: this step's rate from the tokens before it.
        for group in optimizer.param_groups:
            group["lr"] = base_lr * (1 - state["tokens"] / settings.tokens)
        loss = _train_step(session, head, translators, batch, optimizer)
        scored = sum(len(window.input_ids) - 1 for window in batch)
        state["step"], state["tokens"] = step + 1, state["tokens"] + scored
        state["losses"].append(loss)
        bar.set_postfix(loss=f"{loss:.3f}")
        bar.update(scored)
        log.debug("%d/%d tokens: loss %.4f (Σ over layers of mean KL, nats)", state["tokens"],
                  settings.tokens, loss)
        if state["step"] % settings.checkpoint_every == 0:
            _save_checkpoint(checkpoint, translators, optimizer, state)
    bar.close()
    _save_checkpoint(checkpoint, translators, optimizer, state)
    seconds = time.perf_counter() - started
    # The trained parameters, read as the lens reads any tuned lens.
    trained = TunedLens.from_translators(tuned_format.Translators(
        [t.weight for t in translators], [t.bias for t in translators]))
    after = _evaluate(session, held_out, trained) if held_out else None
    config = {"base_model_name_or_path": request.reference, "d_model": width,
              "num_hidden_layers": layers, "bias": True, "base_model_revision": request.revision,
              "unembed_hash": tuned_format.unembed_hash(session.head.weight),
              "lens_type": tuned_format.LENS_TYPE}
    tuned_format.save(out, [t.weight for t in translators], [t.bias for t in translators], config)
    report = {
        "model": request.name, "corpus": source.describe(), "settings": asdict(settings),
        "steps": state["step"], "tokens": state["tokens"], "train_seconds": round(seconds, 1),
        "held_out_tokens": before.scored_tokens if before else 0,
        "loss_per_step": [round(v, 4) for v in state["losses"]],
        "held_out": ({"logit": before.curves(), "tuned": after.curves()}
                     if before and after else None),
    }
    replace_file(out / "training-report.json",
                 lambda path: path.write_text(json.dumps(report, indent=1), encoding="utf-8"))
    session.close()
    return report


def _exactly(windows: Iterator[corpora.Window], tokens: int) -> Iterator[corpora.Window]:
    """Windows until exactly ``tokens`` scored positions (the last one cut to fit)."""
    left = tokens
    for window in windows:
        if left <= 0:
            return
        if len(window.input_ids) - 1 > left:
            window = corpora.Window(window.document, window.input_ids[:left + 1],
                                    window.target_bytes[:left])
        left -= len(window.input_ids) - 1
        yield window


def _batches(windows: Iterator[corpora.Window], tokens: int
             ) -> Iterator[list[corpora.Window]]:
    batch, count = [], 0
    for window in windows:
        batch.append(window)
        count += len(window.input_ids) - 1  # scored positions, as the budget counts them
        if count >= tokens:
            yield batch
            batch, count = [], 0
    if batch:
        yield batch


def _evaluate(session: ModelSession, windows: list[corpora.Window], lens: Lens) -> CorpusSums:
    """The held-out windows' curves through one lens (the corpus-curve code)."""
    return measure(session, windows, [lens])[lens]


def _train_step(session: ModelSession, head: Any, translators: torch.nn.ModuleList,
                batch: list[corpora.Window], optimizer: torch.optim.Optimizer) -> float:
    """One optimizer step on a batch of windows; returns Σ over layers of the mean KL.
    ``head`` is the model's head in float32 (LensHead.in_float32): the lens, its loss and
    its gradient are float32 whatever the model's dtype."""
    vocab = head.weight.shape[0]
    chunk = max(1, LOGITS_PER_CHUNK // vocab)
    total_tokens = sum(len(w.input_ids) for w in batch)
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for _, hidden, last in session.hidden_states([w.input_ids for w in batch]):
        with torch.no_grad():
            final = torch.log_softmax(head.logits(last.float()), -1)  # (T, V) float32
            p_final = final.exp()
            negentropy = (p_final * final).sum(-1)  # Σ p log p, per position
        for layer, translator in enumerate(translators):
            h = hidden[layer].to(head.weight.device).float()
            normalized = head.normalize(h + translator(h))
            gradient = torch.empty_like(normalized)
            with torch.no_grad():
                for start in range(0, normalized.shape[0], chunk):
                    rows = slice(start, start + chunk)
                    loss, gradient[rows] = _kl_gradient(
                        head, normalized[rows].detach(), p_final[rows], negentropy[rows],
                        1.0 / total_tokens)
                    total += loss
            normalized.backward(gradient)
    torch.nn.utils.clip_grad_norm_(translators.parameters(), MAX_GRAD_NORM)
    optimizer.step()
    return total


def _kl_gradient(head: Any, inputs: torch.Tensor, p_final: torch.Tensor,
                 negentropy: torch.Tensor, weight: float) -> tuple[float, torch.Tensor]:
    """weight · Σ KL(final ‖ lens) over these rows, and its gradient wrt ``inputs``.

    By hand rather than through autograd: d KL / d logits = softmax(logits) - p_final, so one
    matmul forward, a few in-place passes over the logits, and one matmul back (half the
    memory traffic of autograd's log-softmax graph). Soft-capping and logit scales are
    differentiated explicitly.
    """
    raw = torch.nn.functional.linear(inputs, head.weight, head.bias).float()
    logits = head.postprocess(raw) if (head.softcap or head.logit_scale != 1.0) else raw
    chain = None
    if head.softcap:
        chain = 1 - (logits / head.softcap) ** 2  # d tanh-cap / d (scaled) raw logits
    cross = (p_final * logits).sum(-1)  # Σ p z
    maximum = logits.amax(-1, keepdim=True)
    logits.sub_(maximum).exp_()
    total = logits.sum(-1, keepdim=True)
    # KL = Σ p log p - Σ p (z - max - log Σ e^(z - max))
    kl = negentropy - cross + maximum[:, 0] + torch.log(total[:, 0])
    gradient = logits.div_(total).sub_(p_final)  # softmax - p
    if chain is not None:
        gradient.mul_(chain)
    if head.logit_scale != 1.0:
        gradient.mul_(head.logit_scale)
    gradient.mul_(weight)
    back = gradient.to(head.weight.dtype) @ head.weight
    return kl.sum().item() * weight, back.to(inputs.dtype)


def _save_checkpoint(path: Path, translators: torch.nn.ModuleList, optimizer: Any,
                     state: dict[str, Any]) -> None:
    payload = {"translators": translators.state_dict(), "optimizer": optimizer.state_dict(),
               "state": state, "settings": state["settings"]}
    replace_file(path, lambda temporary: torch.save(payload, temporary))
