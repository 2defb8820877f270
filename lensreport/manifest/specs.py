"""The manifest's typed specs: what a validated prompts.yaml says, with the line of each item."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..lens.corpus import CorpusSource
from ..lens.settings import LensSettings
from ..models.loading import ModelRequest
from ..models.prompts import PromptRequest, TokenGroup


EXPORT_FORMATS = ("png", "svg", "pdf")  # static figure formats (site/export.py)


@dataclass(frozen=True)
class SiteSettings:
    title: str = "Logit lens report"
    description: str = ""
    site_url: str | None = None
    note: str | None = None
    theme_dir: Path | None = None
    export: tuple[str, ...] = ()  # of EXPORT_FORMATS; none by default
    # A CSV file beside each run's JSON in data/; without, the browser writes it from the
    # document when "Download CSV" is clicked (README, "CSV downloads").
    csv_files: bool = False


@dataclass(frozen=True)
class ModelSpec:
    name: str
    slug: str
    reference: str
    revision: str | None
    dtype: str
    device: str
    lens: LensSettings
    final_norm: str | None
    unembedding: str | None
    trust_remote_code: bool
    note: str | None
    line: int
    # Big models (accelerate): where each module lives, how much each device may hold, and
    # where disk-offloaded weights go. See README, "Scaling up".
    device_map: str | dict[str, Any] | None = None
    max_memory: dict[str, Any] | None = None
    offload_folder: Path | None = None

    @property
    def request(self) -> ModelRequest:
        """What the engine needs to load this model (it knows no manifest)."""
        return ModelRequest(
            name=self.name, reference=self.reference, slug=self.slug, revision=self.revision,
            dtype=self.dtype, device=self.device, trust_remote_code=self.trust_remote_code,
            device_map=self.device_map, max_memory=self.max_memory,
            offload_folder=self.offload_folder, final_norm=self.final_norm,
            unembedding=self.unembedding)


@dataclass(frozen=True)
class PromptSpec:
    """A prompt: its text (for a chat, the messages as "role: content" lines), a target,
    token groups, chat messages and the number of tokens to generate (see models/prompts.py)."""

    name: str
    slug: str
    text: str
    target: str | None
    note: str | None
    line: int
    targets: tuple[TokenGroup, ...] = ()
    messages: tuple[tuple[str, str], ...] | None = None
    generate: int = 0
    models: tuple[str, ...] | None = None  # the models it runs on (None: every model)

    def runs_on(self, model: str) -> bool:
        return self.models is None or model in self.models

    @property
    def request(self) -> PromptRequest:
        """What the engine needs to tokenize, generate and lens this prompt."""
        return PromptRequest(name=self.name, text=self.text, slug=self.slug, target=self.target,
                             groups=self.targets, messages=self.messages,
                             generate=self.generate)


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus to average over: see lens/corpus.py for windows, scoring and bytes."""

    name: str
    slug: str
    source: CorpusSource
    max_tokens: int
    context: int
    note: str | None
    line: int
    targets: tuple[TokenGroup, ...] = ()  # per-row mean group probability curves


@dataclass(frozen=True)
class Manifest:
    path: Path
    site: SiteSettings
    lens: LensSettings
    models: tuple[ModelSpec, ...]
    prompts: tuple[PromptSpec, ...]
    site_dir: Path | None = None
    cache_dir: Path | str | None = None  # a folder, or an fsspec URL (s3://…, file://…)
    result_files: tuple[Path, ...] = ()
    results_line: int | None = None
    corpora: tuple[CorpusSpec, ...] = ()

    @property
    def root(self) -> Path:
        """Relative paths in the manifest are relative to its folder."""
        return self.path.parent

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)
