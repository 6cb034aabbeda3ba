"""Visit every page of a running lab in headless Chromium and screenshot it, as a newcomer would.

    .venv/bin/python scripts/walkthrough.py http://localhost:8501 test_artifacts/fresh --label 0min

Prints, per page, how long it took to render (page.goto until the script has finished and drawn)
and the page's first message; the screenshots go to OUT/LABEL_PAGE.png. Used for issue 15's
"0, 1 and 5 minutes after a fresh start" check.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

PAGES = ["", "autoencoder", "classifier", "latent", "sweep", "compare", "reports", "try_it"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SETTLED = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  return app && app.getAttribute("data-test-script-state") === "notRunning"
    && !document.querySelector("[data-testid='stSkeleton']") && document.querySelector("h1");
}"""


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--label", default="now")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for name in PAGES:
            start = time.perf_counter()
            page.goto(f"{args.url}/{name}")
            page.wait_for_timeout(300)
            page.wait_for_function(SETTLED, timeout=180_000)
            seconds = time.perf_counter() - start
            page.wait_for_timeout(1000)  # charts draw after the script ends
            page.screenshot(path=str(out / f"{args.label}_{name or 'home'}.png"), full_page=True)
            alerts = page.locator("[data-testid='stAlert']")
            first = " ".join(alerts.first.inner_text().split())[:110] if alerts.count() else "-"
            errors = page.locator("[data-testid='stException']").count()
            print(f"{args.label:6s} /{name:12s} {seconds:5.2f} s  exceptions {errors}  {first}", flush=True)
        browser.close()


if __name__ == "__main__":
    main()
