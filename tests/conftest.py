"""Shared fixtures: tiny saved models, the installed console script, the real demo site."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# In CI, property tests use a fixed sequence of examples (no run can fail by a new draw);
# locally they explore, and failures are kept in .hypothesis/ and replayed.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


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


def lensreport_command() -> list[str]:
    """The installed console script, as a user runs it."""
    script = Path(sys.executable).parent / "lensreport"
    assert script.is_file(), f"console script missing: {script} (pip install -e .)"
    return [str(script)]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600,
            env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(lensreport_command() + [str(a) for a in args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def write_manifest(folder: Path, body: str, name: str = "prompts.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def demo_site(tmp_path_factory: pytest.TempPathFactory, weights_cache: Path) -> Path:
    """The demo manifest (both packaged real models) built once through the CLI."""
    work = tmp_path_factory.mktemp("demo")
    manifest = work / "demo.yaml"
    shutil.copy(REPO / "prompts" / "demo.yaml", manifest)
    shutil.copytree(REPO / "prompts" / "corpus", work / "corpus")
    # The demo's tuned lens, on a smaller budget than `make demo` trains (10k tokens).
    result = run_cli("train-lens", manifest, "--model", "smollm2-135m", "--corpus",
                     work / "corpus" / "train.txt", "--tokens", "1024", "--held-out", "256",
                     timeout=1200)
    assert result.returncode == 0, result.stderr
    result = run_cli("build", manifest, "--site-dir", work / "site", timeout=1200)
    assert result.returncode == 0, result.stderr
    return work / "site"


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
