"""The manifest (prompts.yaml): YAML with line numbers, typed specs, validation.

File:line lives here only: the layers below raise their own errors, this one says where in
the manifest the problem is.
"""

from .parse import load_manifest, parse_manifest
from .specs import CorpusSpec, LensSettings, Manifest, ModelSpec, PromptSpec, SiteSettings

__all__ = ["load_manifest", "parse_manifest", "CorpusSpec", "LensSettings", "Manifest",
           "ModelSpec", "PromptSpec", "SiteSettings"]
