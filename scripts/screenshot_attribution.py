"""Make README's screenshot of the "What wrote it" panel from a built demo site.

    make demo && .venv/bin/python scripts/screenshot_attribution.py site docs/attribution-panel.png

Opens the fox prompt's page in headless Chromium, clicks SmolLM2's cell at the last position
two rows below the top (clear of the mode bar; the panel is the position's, whatever the
row) as a reader does, waits for the panel's bars
and heads to draw, and saves the figure with its panel.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 960, "height": 900},
                                device_scale_factor=1)
        page.goto((args.site / "prompts/fox/index.html").resolve().as_uri())
        page.wait_for_selector("html[data-figures-ready]", timeout=60_000)
        section = page.locator('section[id="fig-smollm2-135m--fox"]')
        heatmap = section.locator(".heatmap")
        heatmap.scroll_into_view_if_needed()
        x, y = page.evaluate("""el => {
            const layout = el._fullLayout, data = el.data[0];
            return [layout.xaxis._offset + layout.xaxis.l2p(data.x.length - 1),
                    layout.yaxis._offset + layout.yaxis.l2p(data.y[data.y.length - 3])];
        }""", heatmap.element_handle())
        page.evaluate("""([el, y]) => window.scrollBy(
            0, el.getBoundingClientRect().top + y - innerHeight / 3)""",
                      [heatmap.element_handle(), y])
        box = heatmap.bounding_box()
        panel = section.locator(".attribution")
        for _ in range(3):  # Plotly's click reports the cell its throttled hover last found
            page.mouse.move(box["x"] + x - 4, box["y"] + y + 2)
            page.mouse.move(box["x"] + x - 6, box["y"] + y)
            page.wait_for_selector(".hoverlayer .hovertext", timeout=10_000)
            page.mouse.down()
            page.mouse.up()
            try:
                panel.wait_for(state="visible", timeout=5_000)
                break
            except Exception:  # noqa: BLE001 - playwright's TimeoutError: click again
                continue
        page.wait_for_function("el => el.data && el.data.length >= 3",
                               arg=panel.locator(".attribution-bars").element_handle(),
                               timeout=10_000)
        page.mouse.move(1, 1)
        panel.scroll_into_view_if_needed()
        panel.screenshot(path=str(args.out))
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
