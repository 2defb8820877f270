"""`lensreport serve` in a real browser: open pages reload after a rebuild, a broken theme
template shows a banner while the last good site stays served, and fixing it recovers."""

from __future__ import annotations

import pytest

from conftest import REPO, serving


@pytest.fixture
def served(tmp_path, built_tiny):
    theme = tmp_path / "theme"
    theme.mkdir()
    manifest = built_tiny(tmp_path, extra="  theme_dir: theme\n")
    with serving(manifest) as (address, process):
        yield address, theme, process


@pytest.mark.browser
def test_live_reload_banner_and_recovery(served, page):
    address, theme, process = served
    base = (REPO / "lensreport" / "site" / "templates" / "index.html").read_text()
    page.goto(address + "index.html")
    assert page.locator("h1").inner_text() == "Tiny report"

    # A good edit: the open page reloads by itself and shows it.
    (theme / "index.html").write_text(base.replace("{% block content %}",
                                                   "{% block content %}<p id=edit>FIRST</p>"))
    page.wait_for_selector("#edit", timeout=120_000)
    assert page.locator("#edit").inner_text() == "FIRST"

    # A Jinja syntax error, then an undefined variable: the server survives both, the page
    # keeps the last good build and shows the error in a banner.
    (theme / "index.html").write_text(base.replace("{% block content %}",
                                                   "{% block content %}{% if %}"))
    banner = page.locator(".lensreport-build-error")
    banner.wait_for(timeout=120_000)
    assert "TemplateSyntaxError" in banner.inner_text()
    assert "index.html" in banner.inner_text()
    assert page.locator("#edit").inner_text() == "FIRST"
    (theme / "index.html").write_text(base.replace("{% block content %}",
                                                   "{% block content %}{{ no_such_thing.x }}"))
    page.wait_for_function("() => document.querySelector('.lensreport-build-error')"
                           ".textContent.includes('Undefined')", timeout=120_000)
    assert process.poll() is None

    # Fixed: the banner goes, the page reloads with the new content.
    (theme / "index.html").write_text(base.replace("{% block content %}",
                                                   "{% block content %}<p id=edit>FIXED</p>"))
    page.wait_for_function("() => document.getElementById('edit') && "
                           "document.getElementById('edit').textContent === 'FIXED'",
                           timeout=120_000)
    assert page.locator(".lensreport-build-error").count() == 0
    assert page.errors == []
