"""Every command as a user runs it: in this process through click (``run_cli``), and the
installed console script itself where the process matters."""

from __future__ import annotations

from lensreport.results.documents import loads
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from conftest import (REPO, run_cli, run_console_script, serving, summary_counts, tiny_manifest,
                      wait_until, write_manifest)

BASE_INDEX = REPO / "lensreport" / "site" / "templates" / "index.html"


def test_the_console_script_runs(tmp_path):
    """The installed entry point, once, as a process: it starts, parses, exits 0, and a
    user error is an exit code and one line, with nothing else on stderr."""
    result = run_console_script("--version")
    assert result.returncode == 0 and "lensreport" in result.stdout, result.stderr
    assert result.stderr == ""
    result = run_console_script("validate", tmp_path / "none.yaml")
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'none.yaml'}: manifest file not found"), line


def test_version_and_help():
    result = run_cli("--version")
    assert result.returncode == 0 and "lensreport" in result.stdout
    for command in ("build", "serve", "gh-deploy", "new", "validate", "train-lens"):
        result = run_cli(command, "--help")
        assert result.returncode == 0
        assert "Example" in result.stdout, command


def test_build_writes_results_and_reuses_the_cache(tmp_path, tiny_llama):
    manifest = tiny_manifest(tmp_path, tiny_llama)
    first = run_cli("build", manifest)
    assert first.returncode == 0, first.stderr
    assert summary_counts(first.stderr) == (1, 0, "tiny")
    document = loads((tmp_path / "site/data/tiny/fox.json").read_text())
    assert document["prompt"]["text"] == "The quick brown fox jumps over the lazy"
    second = run_cli("build", manifest)
    assert summary_counts(second.stderr) == (0, 1, "none")
    # Add a prompt: only that prompt runs.
    tiny_manifest(tmp_path, tiny_llama,
                  prompts="  - name: capital\n    text: The capital of France is\n")
    third = run_cli("build", manifest, "-v")
    assert summary_counts(third.stderr) == (1, 1, "tiny")
    assert "computed tiny / capital" in third.stderr
    assert (tmp_path / "site/prompts/capital/index.html").is_file()
    clean = run_cli("build", manifest, "--clean")
    assert summary_counts(clean.stderr) == (2, 0, "tiny")


def test_quiet_shows_only_warnings_and_errors(tmp_path, built_tiny):
    manifest = built_tiny(tmp_path)
    before = os.environ.get("TQDM_DISABLE")
    result = run_cli("build", manifest, "-q")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()  # the target's warning, and no info lines
    assert lines and all(line.startswith("warning: ") for line in lines), result.stderr
    assert os.environ.get("TQDM_DISABLE") == before  # a command's settings stay in it
    assert summary_counts(run_cli("build", manifest).stderr) == (0, 1, "none")


def test_changing_dtype_reruns_only_that_model(tmp_path, tiny_models, weights_cache):
    a, b = tiny_models("llama", "sentencepiece"), tiny_models("gpt2")
    body = f"""
        models:
          - name: a
            model: {a}
          - name: b
            model: {b}
            dtype: DTYPE
        prompts:
          - name: p
            text: hello world
    """
    manifest = write_manifest(tmp_path, body.replace("DTYPE", "float32"))
    assert summary_counts(run_cli("build", manifest).stderr) == (2, 0, "a, b")
    write_manifest(tmp_path, body.replace("DTYPE", "bfloat16"))
    result = run_cli("build", manifest)
    assert summary_counts(result.stderr) == (1, 1, "b")


def test_template_only_change_loads_no_model(tmp_path, built_tiny):
    theme = tmp_path / "theme"
    (theme / "assets").mkdir(parents=True)
    manifest = built_tiny(tmp_path, extra="  theme_dir: theme\n")
    (theme / "assets" / "style.css").write_text("body { color: rebeccapurple; }")
    (theme / "index.html").write_text(BASE_INDEX.read_text().replace(
        "{% block content %}", "{% block content %}<p>THEMED</p>"))
    result = run_cli("build", manifest)
    assert summary_counts(result.stderr) == (0, 1, "none")
    assert "THEMED" in (tmp_path / "site/index.html").read_text()
    assert "rebeccapurple" in (tmp_path / "site/assets/style.css").read_text()


def test_output_is_deterministic(tmp_path, built_tiny):
    manifest = built_tiny(tmp_path)
    first = run_cli("build", manifest, "--site-dir", tmp_path / "one")  # from the cache
    second = run_cli("build", manifest, "--site-dir", tmp_path / "two", "--clean")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert summary_counts(first.stderr)[:2] == (0, 1)
    assert summary_counts(second.stderr)[0] == 1  # really recomputed, not copied from cache

    def tree(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    one, two = tree(tmp_path / "one"), tree(tmp_path / "two")
    assert len(one) > 10 and one.keys() == two.keys()
    assert [name for name in one if one[name] != two[name]] == []


def test_validate(tmp_path, tiny_llama):
    manifest = tiny_manifest(tmp_path, tiny_llama)
    result = run_cli("validate", manifest)
    assert result.returncode == 0 and "is valid" in result.stderr
    bad = write_manifest(tmp_path, "models:\n  - name: x\n    model: ./missing\nprompts: []\n",
                         "bad.yaml")
    result = run_cli("validate", bad)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}:4: prompts: expected a non-empty list of prompts, each with 'name' and "
        "'text', got a list"]
    missing = write_manifest(tmp_path, "models:\n  - name: x\n    model: ./missing\n"
                                       "prompts: [{name: a, text: b}]\n", "missing.yaml")
    result = run_cli("validate", missing)
    assert result.returncode == 2
    assert f"{missing}:2: model 'x'.model:" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_only_model_computes_only_that_model(tmp_path, tiny_models, weights_cache):
    manifest = write_manifest(tmp_path, f"""
        models:
          - {{name: a, model: {tiny_models("gpt2")}}}
          - {{name: b, model: {tiny_models("llama", "sentencepiece")}}}
        prompts:
          - {{name: fox, text: "The quick brown fox"}}
    """)
    result = run_cli("build", manifest, "--only-model", "b")
    assert result.returncode == 0, result.stderr
    assert summary_counts(result.stderr) == (1, 0, "b")
    assert (tmp_path / "site/data/b/fox.json").is_file()
    assert not (tmp_path / "site/data/a").exists()  # not computed, not cached: not shown
    result = run_cli("build", manifest, "--only-model", "a")
    assert summary_counts(result.stderr) == (1, 0, "a")
    assert (tmp_path / "site/data/b/fox.json").is_file()  # b comes from the cache
    result = run_cli("build", manifest, "--only-model", "c")
    assert result.returncode == 2 and "--only-model 'c': no such model" in result.stderr


def test_a_cached_build_never_imports_torch(tmp_path, built_tiny):
    """A site rebuilt from the cache (the CI recipe) needs no torch at all: a fresh
    interpreter, since this one imported torch long ago."""
    manifest = built_tiny(tmp_path)
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import sys\n"
        "from lensreport.cli import main\n"
        "try:\n"
        "    main(['build', sys.argv[1]])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n")
    result = subprocess.run([sys.executable, str(probe), str(manifest)], capture_output=True,
                            text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr
    assert "0 run(s) computed, 1 from the cache" in result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_new_writes_a_valid_starter(tmp_path):
    result = run_cli("new", tmp_path / "report")
    assert result.returncode == 0, result.stderr
    starter = tmp_path / "report" / "prompts.yaml"
    assert "# lensreport manifest" in starter.read_text()
    assert run_cli("validate", starter).returncode == 0
    again = run_cli("new", tmp_path / "report")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_hub_failure_is_one_clear_line(tmp_path, weights_cache):
    manifest = write_manifest(tmp_path, """
        models:
          - name: phi
            model: microsoft/phi-1_5
        prompts:
          - name: p
            text: hi
    """)
    result = run_cli("build", manifest, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot load from the Hugging Face Hub" in errors[0]
    assert "model 'phi'" in errors[0]
    assert "Traceback" not in result.stderr


def test_strict_fails_on_warnings_and_keeps_the_site(tmp_path, built_tiny):
    manifest = built_tiny(tmp_path)
    before = (tmp_path / "site/index.html").read_bytes()
    manifest.write_text(manifest.read_text().replace('target: " dog"',
                                                     'target: " dog barks loudly"'))
    lenient = run_cli("build", manifest, "--site-dir", tmp_path / "other")
    assert lenient.returncode == 0 and "warning: prompt 'fox': target" in lenient.stderr
    strict = run_cli("build", manifest, "--strict")
    assert strict.returncode == 1 and "--strict" in strict.stderr
    assert (tmp_path / "site/index.html").read_bytes() == before


GIT_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def published(remote: Path) -> list[str]:
    return subprocess.run(["git", "-C", str(remote), "ls-tree", "-r", "--name-only", "gh-pages"],
                          capture_output=True, text=True, check=True).stdout.split()


def test_gh_deploy_to_a_local_bare_remote(tmp_path, built_tiny):
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(git + ["init", "-q"], check=True)
    manifest = built_tiny(repo)
    shutil.rmtree(repo / "site")  # gh-deploy builds it
    subprocess.run(git + ["add", "prompts.yaml"], check=True)
    subprocess.run(git + ["commit", "-qm", "report"], check=True)
    subprocess.run(git + ["remote", "add", "origin", str(remote)], check=True)
    result = run_cli("gh-deploy", manifest, cwd=repo, env=GIT_IDENTITY)
    assert result.returncode == 0, result.stderr
    assert {"index.html", ".nojekyll", "assets/plotly.min.js", "data/tiny/fox.json",
            "prompts/fox/index.html", "embed/tiny/fox.html"} <= set(published(remote))


def test_gh_deploy_outside_git_is_a_clear_error(tmp_path, tiny_llama):
    manifest = tiny_manifest(tmp_path, tiny_llama)
    result = run_cli("gh-deploy", manifest, cwd=tmp_path,
                     env={"GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert result.returncode == 1 and "not inside a git repository" in result.stderr
    assert not (tmp_path / "site").exists()


def test_serve_rebuilds_on_change(tmp_path, built_tiny):
    theme = tmp_path / "theme"
    theme.mkdir()
    manifest = built_tiny(tmp_path, extra="  theme_dir: theme\n")
    with serving(manifest) as (address, _):
        page = urllib.request.urlopen(address + "index.html", timeout=10).read().decode()
        assert "Tiny report" in page and "livereload.js" in page
        status = lambda: urllib.request.urlopen(address + "__lensreport__/status",  # noqa: E731
                                                timeout=10).read()
        build_id = status()
        (theme / "index.html").write_text(BASE_INDEX.read_text().replace(
            "{% block content %}", "{% block content %}<p>EDITED</p>"))
        wait_until(lambda: status() != build_id, 60, "a rebuild after the theme edit")
        page = urllib.request.urlopen(address + "index.html", timeout=10).read().decode()
        assert "EDITED" in page
    assert "EDITED" not in (tmp_path / "site" / "index.html").read_text()  # site/ untouched


def test_a_second_clone_reuses_the_results_cache(tmp_path, tiny_llama):
    """Keys are content: another folder, a copied model and a fresh weights cache (so no
    remembered digests) still find every result; device auto resolves to the same type."""
    first = tmp_path / "clone-1"
    shutil.copytree(tiny_llama, first / "models" / "tiny")
    manifest = tiny_manifest(first, Path("./models/tiny"))
    manifest.write_text(manifest.read_text().replace("model: models/tiny",
                                                     "model: ./models/tiny\n    device: cpu"))
    assert "device: cpu" in manifest.read_text()
    assert summary_counts(run_cli("build", manifest).stderr) == (1, 0, "tiny")
    second = tmp_path / "elsewhere" / "clone-2"
    shutil.copytree(first, second, ignore=shutil.ignore_patterns("site"))
    moved = second / "prompts.yaml"
    moved.write_text(moved.read_text().replace("device: cpu", "device: auto"))
    result = run_cli("build", moved, env={"LENSREPORT_CACHE": str(tmp_path / "fresh-cache")})
    assert result.returncode == 0, result.stderr
    assert summary_counts(result.stderr) == (0, 1, "none")
    assert (tmp_path / "fresh-cache" / "digests.json").is_file()  # digests really recomputed
    # Different weights are different content: one changed byte recomputes.
    weights = next((second / "models" / "tiny").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert summary_counts(run_cli("build", moved).stderr)[0] == 1


def test_gh_deploy_from_a_subdirectory_publishes_the_right_folder(tmp_path, built_tiny):
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    repo = tmp_path / "repo"
    (repo / "docs" / "report").mkdir(parents=True)
    git = ["git", "-C", str(repo)]
    subprocess.run(git + ["init", "-q"], check=True)
    manifest = built_tiny(repo / "docs" / "report")
    shutil.rmtree(manifest.with_name("site"))
    subprocess.run(git + ["remote", "add", "origin", str(remote)], check=True)
    # A decoy at the repository top with the same relative name: it must not be published.
    (repo / "public").mkdir()
    (repo / "public" / "decoy.html").write_text("wrong tree")
    result = run_cli("gh-deploy", "prompts.yaml", "--site-dir", "public",
                     cwd=repo / "docs" / "report", env=GIT_IDENTITY)
    assert result.returncode == 0, result.stderr
    files = published(remote)
    assert "index.html" in files and "decoy.html" not in files
    assert (repo / "docs" / "report" / "public" / "index.html").is_file()
    assert not manifest.with_name("site").exists()


def test_gh_deploy_checks_the_remote_before_building(tmp_path, tiny_llama):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "-C", str(repo), "init", "-q"], check=True)
    manifest = tiny_manifest(repo, tiny_llama)
    result = run_cli("gh-deploy", manifest, "--remote", "nowhere", cwd=repo)
    assert result.returncode == 1
    assert "git remote 'nowhere' does not exist" in result.stderr
    assert "loading model" not in result.stderr and not (repo / "site").exists()
