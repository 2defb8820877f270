"""lensreport as users install it: a wheel in a fresh virtual environment, run outside the
checkout (an editable install would hide packaging bugs such as unpackaged templates)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, SMOLLM2, serving, write_manifest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                             "--no-build-isolation", "-q", "-w", str(folder), str(REPO)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return next(folder.glob("lensreport-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel; its dependencies come from the test venv's
    site-packages through a .pth line (whose own .pth files, the editable install's among
    them, are not processed), so the checkout is never on sys.path."""
    env_dir = tmp_path_factory.mktemp("fresh-venv")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                             "--no-deps", "--no-index", "-q", str(wheel)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    where = subprocess.check_output([str(python), "-c",
                                     "import lensreport; print(lensreport.__file__)"],
                                    text=True, cwd=env_dir).strip()
    assert where.startswith(str(site)), where  # the wheel's copy, not the checkout
    return env_dir


def _run(env_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(env_dir / "bin" / "lensreport"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900, env=dict(os.environ))


def test_wheel_holds_templates_and_assets(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("lensreport/site/templates/base.html", "lensreport/site/templates/assets/lensreport.js",
                   "lensreport/site/templates/assets/style.css", "lensreport/site/templates/starter.yaml",
                   "lensreport/site/vendor/plotly-cartesian.min.js",
                   "lensreport/site/vendor/plotly.js-LICENSE"):
        assert needed in names, needed
    assert not any(name.startswith(("tests/", "templates/")) for name in names)


def test_new_and_validate_from_the_wheel(installed: Path, tmp_path: Path):
    result = _run(installed, "new", "report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    starter = tmp_path / "report" / "prompts.yaml"
    assert "models:" in starter.read_text()
    result = _run(installed, "validate", "report/prompts.yaml", cwd=tmp_path)
    # The starter names a Hub model: it validates (the reference is well formed) offline.
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_build_and_serve_a_real_model_from_the_wheel(installed: Path, tmp_path: Path,
                                                     weights_cache: Path):
    manifest = write_manifest(tmp_path / "work", f"""
        site: {{title: From a wheel}}
        models:
          - name: smollm2
            model: {SMOLLM2}
        prompts:
          - {{name: fox, text: "The quick brown fox jumps over the lazy", target: " dog"}}
    """)
    result = _run(installed, "validate", str(manifest), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = _run(installed, "build", str(manifest), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    site = tmp_path / "work" / "site"
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "From a wheel" in index and "dog" in index
    for asset in ("plotly.min.js", "lensreport.js", "style.css", "favicon.svg"):
        assert (site / "assets" / asset).stat().st_size > 0, asset
    # The site's plotly.js is the wheel's vendored partial bundle, not the plotly package's.
    assert (site / "assets" / "plotly.min.js").read_bytes().startswith(
        b"/**\n* plotly.js (cartesian - minified) v")
    assert (site / "prompts" / "fox" / "index.html").is_file()

    # (The preview build comes from the results cache the build just filled.)
    with serving(manifest, "--no-watch", command=[str(installed / "bin" / "lensreport")],
                 cwd=tmp_path) as (address, _):
        with urllib.request.urlopen(address + "index.html", timeout=30) as response:
            assert "From a wheel" in response.read().decode("utf-8")
        with urllib.request.urlopen(address + "assets/lensreport.js", timeout=30) as response:
            assert response.status == 200
