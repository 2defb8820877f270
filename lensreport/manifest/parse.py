"""Manifest validation: YAML with lines -> typed specs (specs.py).

Every problem is reported as ``file:line: field: what is wrong (what is allowed)`` before any
model is loaded, all of them together. Unknown keys are errors, so a typo never silently does
nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import ManifestError, ManifestErrors
from ..lens.corpus import CorpusSource
from ..lens.kinds import lens_names
from ..lens.jacobian_format import JacobianSource
from ..lens.settings import ROW_SETTINGS, PatchscopeTarget
from ..lens.tuned_format import TunedSource
from ..models.prompts import TokenGroup
from ..slugs import RESERVED_MODEL_SLUGS, unique_slugs
from ..text import visible
from .specs import EXPORT_FORMATS, CorpusSpec, LensSettings, Manifest, ModelSpec, PromptSpec, \
    SiteSettings
from .yaml_lines import LineMap, load_yaml

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
MAX_TOP_K = 20


@dataclass
class _Checker:
    """Collects every error with its line, so the user fixes them all in one go."""

    path: Path
    errors: list[ManifestError] = field(default_factory=list)
    present: set[str] = field(default_factory=set)  # top-level keys the manifest has

    def error(self, line: int | None, message: str) -> None:
        self.errors.append(ManifestError(self.path, line, message))

    def mapping(self, value: Any, where: str, line: int, allowed: dict[str, str]) -> LineMap | None:
        if not isinstance(value, dict):
            self.error(line, f"{where}: expected a mapping with keys {', '.join(allowed)}, "
                             f"got {_describe(value)}")
            return None
        for key in value:
            if key not in allowed:
                suggestion = _closest(str(key), allowed)
                hint = f" (did you mean '{suggestion}'?)" if suggestion else ""
                self.error(value.key_lines.get(key, line),
                           f"{where}: unknown key '{key}'{hint}; allowed: {', '.join(allowed)}")
        return value  # type: ignore[return-value]

    def get(self, mapping: LineMap, key: str, where: str, kind: Callable[[Any], bool],
            expected: str, default: Any = None, required: bool = False) -> Any:
        if key not in mapping or mapping[key] is None:
            if required:
                self.error(mapping.line, f"{where}: missing required key '{key}' ({expected})")
            return default
        value = mapping[key]
        if not kind(value):
            self.error(mapping.key_lines[key], f"{where}.{key}: expected {expected}, "
                                               f"got {_describe(value)}")
            return default
        return value

    def line_of(self, mapping: LineMap, key: str) -> int:
        return mapping.key_lines.get(key, mapping.line)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}"


def _kind_name(value: Any, known: tuple[str, ...]) -> str:
    """An unknown lens kind as an error shows it, with the closest known one."""
    if not isinstance(value, str):
        return _describe(value)
    suggestion = _closest(value, dict.fromkeys(known, ""))
    return repr(value) + (f" (did you mean '{suggestion}'?)" if suggestion else "")


def _closest(key: str, allowed: dict[str, str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_nonempty_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


# scheme://host[:port][/path]: URL characters only (RFC 3986), so the URL goes into
# sitemap.xml, robots.txt and meta tags as it is: no space, newline or control character.
_SITE_URL = re.compile(r"https?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?"
                       r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?")


def _is_site_url(value: Any) -> bool:
    return isinstance(value, str) and _SITE_URL.fullmatch(value) is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


_TOP_KEYS = {"site": "site settings", "lens": "lens settings", "models": "list of models",
             "prompts": "list of prompts", "site_dir": "output folder",
             "cache_dir": "results store: a folder or an fsspec URL",
             "results": "saved results files (paths or globs), e.g. from run_lens",
             "corpora": "corpora for per-layer curves"}
_CORPUS_KEYS = {"name": "", "path": "", "dataset": "", "split": "", "column": "",
                "max_tokens": "", "context": "", "note": "", "targets": ""}
DEFAULT_CONTEXT = 512
DEFAULT_CORPUS_TOKENS = 20_000
_SITE_KEYS = {"title": "", "description": "", "site_url": "", "note": "", "theme_dir": "",
              "export": "", "csv_files": ""}
_LENS_KEYS = {"kind": "", "kinds": "", "top_k": "", "tuned": "", "jacobian": "",
              "patchscope": "", "decompose": "", "rows": ""}
_PATCHSCOPE_KEYS = {"target": "", "position": ""}
_JACOBIAN_KEYS = {"file": "", "repo": "", "revision": ""}
_TUNED_KEYS = {"folder": "", "repo": "", "type": "", "revision": "", "path": ""}
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
MEMORY_SIZE = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B)?$", re.IGNORECASE)
_MODEL_KEYS = {"device_map": "", "max_memory": "", "offload_folder": "",
               "name": "", "model": "", "revision": "", "dtype": "", "device": "", "lens": "",
               "final_norm": "", "unembedding": "", "trust_remote_code": "", "note": ""}
_PROMPT_KEYS = {"name": "", "text": "", "target": "", "targets": "", "chat": "", "messages": "",
                "generate": "", "models": "", "note": ""}
_GROUP_KEYS = {"word": ""}
_MESSAGE_KEYS = {"role": "", "content": ""}
_GENERATE_KEYS = {"max_new_tokens": ""}
MAX_NEW_TOKENS = 1024


def _lens(checker: _Checker, value: Any, where: str, line: int, base: LensSettings
          ) -> LensSettings:
    mapping = checker.mapping(value, where, line, _LENS_KEYS)
    if mapping is None:
        return base
    kinds = base.kinds
    if "kind" in mapping and "kinds" in mapping:
        checker.error(checker.line_of(mapping, "kinds"),
                      f"{where}: give either kind or kinds, not both")
    known = lens_names()
    kind = checker.get(mapping, "kind", where, lambda v: v in known,
                       f"one of {', '.join(known)}")
    if kind is not None:
        kinds = (kind,)
    listed = checker.get(mapping, "kinds", where,
                         lambda v: isinstance(v, list) and len(v) > 0,
                         f"a list of distinct lens kinds from {', '.join(known)}")
    if listed is not None:
        unknown = [k for k in listed if k not in known]
        repeated = sorted({str(k) for k in listed if listed.count(k) > 1})
        if unknown or repeated:
            checker.error(checker.line_of(mapping, "kinds"), f"{where}.kinds: " + (
                f"unknown lens kind {_kind_name(unknown[0], known)}" if unknown
                else f"lens kind '{repeated[0]}' is listed twice")
                + f"; known: {', '.join(known)}")
        else:
            kinds = tuple(listed)
    top_k = checker.get(mapping, "top_k", where, lambda v: _is_int(v) and 1 <= v <= MAX_TOP_K,
                        f"an integer from 1 to {MAX_TOP_K}", base.top_k)
    tuned = base.tuned
    if mapping.get("tuned") is not None:
        tuned = _tuned(checker, mapping["tuned"], f"{where}.tuned",
                       checker.line_of(mapping, "tuned"))
    jacobian = base.jacobian
    if mapping.get("jacobian") is not None:
        jacobian = _jacobian(checker, mapping["jacobian"], f"{where}.jacobian",
                             checker.line_of(mapping, "jacobian"))
    patchscope = base.patchscope
    if mapping.get("patchscope") is not None:
        patchscope = _patchscope(checker, mapping["patchscope"], f"{where}.patchscope",
                                 checker.line_of(mapping, "patchscope"), patchscope)
    decompose = checker.get(mapping, "decompose", where, lambda v: isinstance(v, bool),
                            "true or false", base.decompose)
    rows = checker.get(mapping, "rows", where, lambda v: v in ROW_SETTINGS,
                       " or ".join(ROW_SETTINGS), base.rows)
    return LensSettings(kinds=kinds, top_k=top_k, tuned=tuned, jacobian=jacobian,
                        patchscope=patchscope, decompose=decompose, rows=rows)


def _patchscope(checker: _Checker, value: Any, where: str, line: int, base: PatchscopeTarget
                ) -> PatchscopeTarget:
    """{target: TEXT, position: INT}; the position is checked against the target's tokens
    when a tokenizer has them (build, validate)."""
    mapping = checker.mapping(value, where, line, _PATCHSCOPE_KEYS)
    if mapping is None:
        return base
    text = checker.get(mapping, "target", where, _is_nonempty_text, "a non-empty text",
                       base.text)
    position = checker.get(mapping, "position", where, _is_int,
                           "a token index in the target (negative counts from its end)",
                           base.position)
    return PatchscopeTarget(text=text, position=position)


def _jacobian(checker: _Checker, value: Any, where: str, line: int) -> JacobianSource | None:
    """A lens file path, or {repo, file, revision} on the Hugging Face Hub (file in the repo;
    without repo, the published lenses' repo)."""
    if isinstance(value, str) and value.strip():
        # Checked when the lens is needed (build, validate), not here: fit-lens writes it.
        return JacobianSource(file=(checker.path.parent / value).resolve(),
                              label=Path(value).as_posix())
    mapping = checker.mapping(value, where, line, _JACOBIAN_KEYS)
    if mapping is None:
        return None
    text = "a text"
    repo = checker.get(mapping, "repo", where, _is_nonempty_text, text)
    filename = checker.get(mapping, "file", where, _is_nonempty_text, "a file in the repo")
    if repo is not None and filename is None:
        checker.error(checker.line_of(mapping, "repo"),
                      f"{where}: a repo needs the file in it (file: path/to/lens.pt)")
    return JacobianSource(repo=repo or JacobianSource.repo, filename=filename,
                          revision=checker.get(mapping, "revision", where, _is_nonempty_text,
                                               text))


def _tuned(checker: _Checker, value: Any, where: str, line: int) -> TunedSource | None:
    """A folder path, or {repo, type, revision, path} on the Hugging Face Hub."""
    if isinstance(value, str) and value.strip():
        # Checked when the lens is needed (build, validate), not here: train-lens writes it.
        return TunedSource(folder=(checker.path.parent / value).resolve(),
                           label=Path(value).as_posix())
    mapping = checker.mapping(value, where, line, _TUNED_KEYS)
    if mapping is None:
        return None
    if mapping.get("folder") is not None:
        return _tuned(checker, mapping["folder"], where, checker.line_of(mapping, "folder"))
    text = "a text"
    return TunedSource(
        repo=checker.get(mapping, "repo", where, _is_nonempty_text, text, TunedSource.repo),
        repo_type=checker.get(mapping, "type", where, lambda v: v in ("model", "space", "dataset"),
                              "model, space or dataset", TunedSource.repo_type),
        revision=checker.get(mapping, "revision", where, _is_nonempty_text, text),
        path=checker.get(mapping, "path", where, _is_nonempty_text, "a folder in the repo"))


def _site(checker: _Checker, value: Any, line: int) -> SiteSettings:
    mapping = checker.mapping(value, "site", line, _SITE_KEYS)
    if mapping is None:
        return SiteSettings()
    text = "a text"
    theme = checker.get(mapping, "theme_dir", "site", _is_nonempty_text, "a folder path")
    theme_dir = None
    if theme is not None:
        theme_dir = (checker.path.parent / theme).resolve()
        if not theme_dir.is_dir():
            checker.error(checker.line_of(mapping, "theme_dir"),
                          f"site.theme_dir: folder {theme!r} does not exist "
                          f"(relative paths start at the manifest's folder)")
            theme_dir = None
    site_url = checker.get(mapping, "site_url", "site", _is_site_url,
                           "an http(s) URL such as https://user.github.io/repo/ (a host, "
                           "then a path of URL characters: percent-encode spaces and others)")
    return SiteSettings(
        title=visible(checker.get(mapping, "title", "site", _is_nonempty_text, text,
                                  SiteSettings.title)),
        description=checker.get(mapping, "description", "site", _is_text, text, ""),
        site_url=site_url,
        note=checker.get(mapping, "note", "site", _is_text, "Markdown text"),
        theme_dir=theme_dir,
        export=tuple(checker.get(
            mapping, "export", "site",
            lambda v: isinstance(v, list) and all(f in EXPORT_FORMATS for f in v)
            and len(set(v)) == len(v),
            f"a list of distinct static figure formats from {', '.join(EXPORT_FORMATS)} "
            "(e.g. [svg, png]; [] for none)", [])),
        csv_files=checker.get(mapping, "csv_files", "site", lambda v: isinstance(v, bool),
                              "true or false", False),
    )


def _named_items(checker: _Checker, value: list, plural: str, singular: str,
                 keys: dict[str, str]) -> Iterator[tuple[LineMap, int, str, Any]]:
    """Each mapping of a list of named items (models, prompts, corpora), with its line, the
    place to name in errors, and its name; names must be present and unique."""
    seen: dict[str, int] = {}
    for index, (item, item_line) in enumerate(zip(value, value.item_lines)):
        where = f"{plural}[{index}]"
        mapping = checker.mapping(item, where, item_line, keys)
        if mapping is None:
            continue
        name = checker.get(mapping, "name", where, _is_nonempty_text, "a non-empty text",
                           required=True)
        if isinstance(name, str):
            name = visible(name)  # kept as shown: no control or bidi character (text.py)
            where = f"{singular} '{name}'"
            if name in seen:
                checker.error(checker.line_of(mapping, "name"),
                              f"{where}: duplicate name (first used on line {seen[name]}); "
                              f"{singular} names must be unique")
            seen.setdefault(name, checker.line_of(mapping, "name"))
        yield mapping, item_line, where, name


def _models(checker: _Checker, value: Any, line: int, lens: LensSettings) -> list[ModelSpec]:
    if value == [] and "results" in checker.present:
        return []  # a site of saved results only
    if not isinstance(value, list) or not value:
        checker.error(line, "models: expected a non-empty list of models, each with 'name' and "
                            f"'model', got {_describe(value)}")
        return []
    specs: list[dict[str, Any]] = []
    for mapping, item_line, where, name in _named_items(checker, value, "models", "model",
                                                        _MODEL_KEYS):
        reference = checker.get(mapping, "model", where, _is_nonempty_text,
                                "a Hub id (org/name), a folder, a .gguf file or "
                                "package:PACKAGE/FILE", required=True)
        dtype = checker.get(mapping, "dtype", where, lambda v: v in DTYPES,
                            f"one of {', '.join(DTYPES)}", "auto")
        device = checker.get(mapping, "device", where,
                             lambda v: isinstance(v, str) and DEVICE_PATTERN.match(v) is not None,
                             "auto, cpu, mps, cuda or cuda:N", "auto")
        revision = checker.get(mapping, "revision", where,
                               lambda v: isinstance(v, (str, int)) and str(v).strip() != "",
                               "a branch, tag or commit")
        model_lens = (_lens(checker, mapping["lens"], f"{where}.lens",
                            checker.line_of(mapping, "lens"), lens)
                      if mapping.get("lens") is not None else lens)
        specs.append(dict(
            name=name, reference=reference, revision=None if revision is None else str(revision),
            dtype=dtype, device=device, lens=model_lens,
            final_norm=checker.get(mapping, "final_norm", where, _is_nonempty_text,
                                   "a module path such as model.norm"),
            unembedding=checker.get(mapping, "unembedding", where, _is_nonempty_text,
                                    "a module path such as lm_head"),
            **_placement(checker, mapping, where),
            trust_remote_code=checker.get(mapping, "trust_remote_code", where, _is_bool,
                                          "true or false", False),
            note=checker.get(mapping, "note", where, _is_text, "Markdown text"),
            line=item_line))
    return _with_slugs(ModelSpec, specs, RESERVED_MODEL_SLUGS)


def _is_device(value: Any) -> bool:
    return (_is_int(value) and value >= 0) or (isinstance(value, str) and (
        value in ("cpu", "disk", "mps") or DEVICE_PATTERN.match(value) is not None))


def _placement(checker: _Checker, mapping: LineMap, where: str) -> dict[str, Any]:
    """device_map / max_memory / offload_folder, in the forms transformers takes."""
    device_map = checker.get(
        mapping, "device_map", where,
        lambda v: v in DEVICE_MAPS or (isinstance(v, dict) and v and all(
            isinstance(k, str) and _is_device(d) for k, d in v.items())),
        f"one of {', '.join(DEVICE_MAPS)}, or a mapping of module paths to devices "
        "(0, cuda:1, cpu, disk)")
    max_memory = checker.get(
        mapping, "max_memory", where,
        lambda v: isinstance(v, dict) and v and all(
            _is_device(k) and (_is_int(m) or (isinstance(m, str) and MEMORY_SIZE.match(m)))
            for k, m in v.items()),
        "a mapping of devices to sizes, e.g. {0: 20GiB, cpu: 60GiB}")
    folder = checker.get(mapping, "offload_folder", where, _is_nonempty_text, "a folder path")
    if (max_memory or folder) and device_map is None:
        checker.error(checker.line_of(mapping, "max_memory" if max_memory else "offload_folder"),
                      f"{where}: max_memory and offload_folder need device_map (e.g. auto)")
    return {"device_map": dict(device_map) if isinstance(device_map, dict) else device_map,
            "max_memory": dict(max_memory) if max_memory else None,
            "offload_folder": (checker.path.parent / folder).resolve() if folder else None}


def _prompts(checker: _Checker, value: Any, line: int, model_names: list[str]
             ) -> list[PromptSpec]:
    if value == [] and checker.present & {"results", "corpora"}:
        return []  # a site of saved results, or of corpus curves only
    if not isinstance(value, list) or not value:
        checker.error(line, "prompts: expected a non-empty list of prompts, each with 'name' and "
                            f"'text', got {_describe(value)}")
        return []
    specs: list[dict[str, Any]] = []
    for mapping, item_line, where, name in _named_items(checker, value, "prompts", "prompt",
                                                        _PROMPT_KEYS):
        messages = _messages(checker, mapping, where)
        text = checker.get(mapping, "text", where, _is_text, "a text",
                           required=messages is None)
        if messages is not None and text is not None:
            checker.error(checker.line_of(mapping, "text"),
                          f"{where}: give text (with chat: true for a chat prompt) or "
                          "messages, not both")
        elif isinstance(text, str) and text == "":
            checker.error(checker.line_of(mapping, "text"),
                          f"{where}.text: the prompt is empty; write at least one character")
        chat = checker.get(mapping, "chat", where, _is_bool, "true or false", False)
        if chat and messages is not None:
            checker.error(checker.line_of(mapping, "chat"),
                          f"{where}: messages are always a chat; drop chat: true")
        elif chat and isinstance(text, str):
            messages = (("user", text),)
        elif messages is not None:
            text = "\n".join(f"{role}: {content}" for role, content in messages)
        target = checker.get(mapping, "target", where, lambda v: isinstance(v, str) and v != "",
                             "a non-empty text (one token, e.g. \" dog\")")
        specs.append(dict(name=name, text=text, target=target,
                          targets=_groups(checker, mapping, where),
                          messages=messages, generate=_generate(checker, mapping, where),
                          models=_prompt_models(checker, mapping, where, model_names),
                          note=checker.get(mapping, "note", where, _is_text, "Markdown text"),
                          line=item_line))
    return _with_slugs(PromptSpec, specs)


def _groups(checker: _Checker, mapping: LineMap, where: str) -> tuple[TokenGroup, ...]:
    """`targets:` named token groups: a list of tokens, or {word: ...} (every token spelling a
    prefix of the word); checked against each tokenizer later (manifest/checks.py)."""
    value = mapping.get("targets")
    if value is None:
        return ()
    line = checker.line_of(mapping, "targets")
    expected = ("a mapping of group names to token lists or {word: ...}, e.g. "
                "animals: [\" dog\", \" cat\"]")
    if not isinstance(value, dict) or not value:
        checker.error(line, f"{where}.targets: expected {expected}, got {_describe(value)}")
        return ()
    groups = []
    for name, members in value.items():
        place, at = f"{where}.targets.{name}", value.key_lines.get(name, line)
        if not _is_nonempty_text(name):
            checker.error(at, f"{where}.targets: a group name must be a non-empty text")
        elif isinstance(members, list):
            if not members or not all(isinstance(m, str) and m != "" for m in members):
                checker.error(at, f"{place}: expected a non-empty list of tokens (texts such "
                                  f"as \" dog\"), got {_describe(members)}")
            else:
                groups.append(TokenGroup(visible(name), tokens=tuple(members)))
        elif isinstance(members, dict):
            group = checker.mapping(members, place, at, _GROUP_KEYS)
            word = group and checker.get(group, "word", place, _is_nonempty_text, "a word",
                                         required=True)
            if isinstance(word, str):
                groups.append(TokenGroup(visible(name), word=word.strip()))
        else:
            checker.error(at, f"{place}: expected a list of tokens or {{word: ...}}, got "
                              f"{_describe(members)}")
    return tuple(groups)


def _messages(checker: _Checker, mapping: LineMap, where: str
              ) -> tuple[tuple[str, str], ...] | None:
    """`messages:` a chat as a list of {role, content}, formatted with the chat template."""
    value = mapping.get("messages")
    if value is None:
        return None
    line = checker.line_of(mapping, "messages")
    if not isinstance(value, list) or not value:
        checker.error(line, f"{where}.messages: expected a non-empty list of {{role, content}}, "
                            f"got {_describe(value)}")
        return None
    messages = []
    for index, (item, item_line) in enumerate(zip(value, value.item_lines)):
        place = f"{where}.messages[{index}]"
        message = checker.mapping(item, place, item_line, _MESSAGE_KEYS)
        if message is None:
            continue
        role = checker.get(message, "role", place, _is_nonempty_text,
                           "a role such as user, assistant or system", required=True)
        content = checker.get(message, "content", place, _is_text, "a text", required=True)
        if isinstance(role, str) and isinstance(content, str):
            messages.append((role, content))
    return tuple(messages) if len(messages) == len(value) else None


def _prompt_models(checker: _Checker, mapping: LineMap, where: str, known: list[str]
                   ) -> tuple[str, ...] | None:
    """`models:` the models a prompt runs on (e.g. a chat prompt on the chat models only)."""
    value = checker.get(mapping, "models", where,
                        lambda v: isinstance(v, list) and v and all(_is_nonempty_text(m)
                                                                    for m in v),
                        "a list of model names from this manifest")
    if value is None:
        return None
    value = [visible(name) for name in value]  # as the names are kept (_named_items)
    unknown = [name for name in value if name not in known]
    if unknown:
        checker.error(checker.line_of(mapping, "models"),
                      f"{where}.models: no model named {unknown[0]!r}; known: "
                      f"{', '.join(known) or 'none'}")
    return tuple(value)


def _generate(checker: _Checker, mapping: LineMap, where: str) -> int:
    """`generate: N` or {max_new_tokens: N}: tokens to generate greedily after the prompt."""
    value = mapping.get("generate")
    if isinstance(value, dict):
        inner = checker.mapping(value, f"{where}.generate", checker.line_of(mapping, "generate"),
                                _GENERATE_KEYS)
        mapping, where = inner, f"{where}.generate"
        key = "max_new_tokens"
        if inner is None:
            return 0
    else:
        key = "generate"
    return checker.get(mapping, key, where, lambda v: _is_int(v) and 1 <= v <= MAX_NEW_TOKENS,
                       f"a number of tokens from 1 to {MAX_NEW_TOKENS}", 0,
                       required=key == "max_new_tokens")


def _corpora(checker: _Checker, value: Any, line: int) -> list[CorpusSpec]:
    if not isinstance(value, list):
        checker.error(line, f"corpora: expected a list of corpora, each with 'name' and 'path' "
                            f"(or 'dataset'), got {_describe(value)}")
        return []
    specs: list[dict[str, Any]] = []
    for mapping, item_line, where, name in _named_items(checker, value, "corpora", "corpus",
                                                        _CORPUS_KEYS):
        path = checker.get(mapping, "path", where, _is_nonempty_text, "a .txt or .jsonl file")
        dataset = checker.get(mapping, "dataset", where, _is_nonempty_text,
                              "a Hugging Face datasets id")
        column = checker.get(mapping, "column", where, _is_nonempty_text, "a field name", "text")
        source = None
        if (path is None) == (dataset is None):
            checker.error(item_line, f"{where}: give exactly one of 'path' (a .txt or .jsonl "
                                     "file) or 'dataset' (a Hugging Face datasets id)")
        elif path is not None:
            file = (checker.path.parent / path).resolve()
            if file.suffix not in (".txt", ".jsonl"):
                checker.error(checker.line_of(mapping, "path"),
                              f"{where}.path: {path!r} is neither a .txt nor a .jsonl file")
            elif not file.is_file():
                checker.error(checker.line_of(mapping, "path"),
                              f"{where}.path: {path!r} does not exist (relative paths start at "
                              "the manifest's folder)")
            else:
                source = CorpusSource(path=file, column=column)
        else:
            source = CorpusSource(dataset=dataset, column=column,
                                  split=checker.get(mapping, "split", where, _is_nonempty_text,
                                                    "a split name", "train"))
        max_tokens = checker.get(mapping, "max_tokens", where, lambda v: _is_int(v) and v > 0,
                                 "a positive integer (scored tokens per model)",
                                 DEFAULT_CORPUS_TOKENS)
        context = checker.get(mapping, "context", where, lambda v: _is_int(v) and v >= 2,
                              "an integer of at least 2 (window length in tokens)",
                              DEFAULT_CONTEXT)
        if source is not None and isinstance(name, str):
            specs.append(dict(name=name, source=source, max_tokens=max_tokens, context=context,
                              note=checker.get(mapping, "note", where, _is_text, "Markdown text"),
                              targets=_groups(checker, mapping, where), line=item_line))
    return _with_slugs(CorpusSpec, specs)


def _with_slugs(cls: type, specs: list[dict[str, Any]],
                reserved: frozenset[str] = frozenset()) -> list:
    valid = [s for s in specs if all(v is not None for k, v in s.items()
                                     if k in ("name", "reference", "text"))]
    slugs = unique_slugs([s["name"] for s in valid], reserved)
    return [cls(slug=slug, **spec) for spec, slug in zip(valid, slugs)]


def parse_manifest(path: Path, text: str) -> Manifest:
    """Validate manifest text; raise ManifestErrors listing every problem (file:line each)."""
    data = load_yaml(path, text)
    checker = _Checker(path)
    if data is None:
        raise ManifestErrors([ManifestError(path, 1, "the manifest is empty; it needs at least "
                                                     "'models' and 'prompts' (see `lensreport new`)")])
    top = checker.mapping(data, "manifest", 1, _TOP_KEYS)
    if top is None:
        raise ManifestErrors(checker.errors)
    checker.present = set(top)
    lens = (_lens(checker, top["lens"], "lens", checker.line_of(top, "lens"), LensSettings())
            if top.get("lens") is not None else LensSettings())
    site = _site(checker, top["site"], checker.line_of(top, "site")) if top.get(
        "site") is not None else SiteSettings()
    for key in ("models", "prompts"):
        if key not in top and "results" not in top and not (key == "prompts"
                                                            and "corpora" in top):
            checker.error(top.line, f"missing required key '{key}' ({_TOP_KEYS[key]})")
    models = _models(checker, top["models"], checker.line_of(top, "models"), lens) \
        if "models" in top else []
    prompts = _prompts(checker, top["prompts"], checker.line_of(top, "prompts"),
                       [m.name for m in models]) \
        if "prompts" in top else []
    result_files = _result_files(checker, top)
    corpora = _corpora(checker, top["corpora"], checker.line_of(top, "corpora")) \
        if top.get("corpora") is not None else []
    folders = {}
    for key in ("site_dir", "cache_dir"):
        folder = checker.get(top, key, "manifest", _is_nonempty_text,
                             "a folder path" + (" or an fsspec URL" if key == "cache_dir" else ""))
        if key == "cache_dir" and folder and "://" in folder:
            folders[key] = folder  # a results store shared by shards (see store.py)
        else:
            folders[key] = (path.parent / folder) if folder else None
    if checker.errors:
        raise ManifestErrors(checker.errors)
    return Manifest(path=path, site=site, lens=lens, models=tuple(models),
                    prompts=tuple(prompts), result_files=result_files, corpora=tuple(corpora),
                    results_line=checker.line_of(top, "results") if "results" in top else None,
                    **folders)


def _result_files(checker: _Checker, top: LineMap) -> tuple[Path, ...]:
    """`results:` paths or globs (relative to the manifest), each matching at least one file."""
    value = top.get("results")
    if value is None:
        return ()
    line = checker.line_of(top, "results")
    if not isinstance(value, list) or not all(_is_nonempty_text(item) for item in value):
        checker.error(line, f"results: expected a list of paths or globs (e.g. - notebooks/*.json), "
                            f"got {_describe(value)}")
        return ()
    files: list[Path] = []
    for pattern, item_line in zip(value, value.item_lines):
        matches = sorted(p for p in checker.path.parent.glob(pattern) if p.is_file()) \
            if not Path(pattern).is_absolute() else sorted(
                p for p in Path(pattern).parent.glob(Path(pattern).name) if p.is_file())
        if not matches:
            checker.error(item_line, f"results: {pattern!r} matches no file (relative paths start "
                                     "at the manifest's folder)")
        files.extend(match for match in matches if match not in files)
    return tuple(files)


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestErrors([ManifestError(path, None, "manifest file not found; create one "
                                                        "with `lensreport new`")]) from None
    except OSError as exc:
        raise ManifestErrors([ManifestError(path, None, f"cannot read manifest: "
                                                        f"{exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ManifestErrors([ManifestError(path, line, "the manifest is not UTF-8 text; "
                                                        "save it as UTF-8")]) from None
    try:
        return parse_manifest(path, text)
    except ManifestError as exc:
        raise ManifestErrors([exc]) from None
