"""Screenshots of the job service's dashboard for the README: ``python docs/screenshots.py [OUT_DIR]``.

Starts a real service on a free loopback port over sample data in a temporary folder (scikit-image's camera
and coins, no network), submits a few jobs (one that succeeds, one that fails, one running, one queued), and
photographs each page with headless Chromium through Playwright (``pip install -e '.[test]'`` and Debian's
``chromium``). Writes ``dashboard-*.png`` into OUT_DIR (default: this folder).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
import zarr

HERE = Path(__file__).resolve().parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _data(root: Path) -> None:
    from skimage import data, transform

    zarr.create_array(str(root / "camera.zarr"), data=data.camera(), chunks=(256, 256))
    big = (transform.resize(data.coins(), (40, 303 * 2, 384 * 2)) * 65535).astype(np.uint16)
    zarr.create_array(str(root / "coins-stack.zarr"), data=big, chunks=(1, 303 * 2, 384 * 2))


def _spec(name: str, inp: str, out: str, steps: list) -> str:
    return yaml.safe_dump({"convpipe": 1, "name": name, "input": inp, "output": out, "steps": steps}, sort_keys=False)


def main(out: Path = HERE) -> list[Path]:
    from playwright.sync_api import sync_playwright

    from convpipe.service.testing import running_service

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        root.mkdir()
        _data(root)
        with running_service(Path(tmp) / "svc", [root], max_running=1) as svc, svc.http() as h:
            def submit(text: str) -> str:
                r = h.post("/jobs", content=text)
                r.raise_for_status()
                return r.json()["id"]

            def wait(job_id: str, states: tuple[str, ...]) -> None:
                deadline = time.monotonic() + 300
                while h.get(f"/jobs/{job_id}").json()["state"] not in states:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"job {job_id} did not reach {states}")
                    time.sleep(0.2)

            edges = submit(_spec("camera-edges", "camera.zarr", "camera-edges.zarr",
                                 [{"gaussian": {"sigma": 2}}, {"sobel": {"axes": "yx"}}]))
            wait(edges, ("succeeded",))
            failed = submit(_spec("typo-in-input", "camera-typo.zarr", "never.zarr", [{"gaussian": {"sigma": 1}}]))
            wait(failed, ("failed",))
            slow = submit(_spec("coins-median", "coins-stack.zarr", "coins-median.zarr", [{"median": {"size": 9}}]))
            submit(_spec("coins-smooth", "coins-stack.zarr", "coins-smooth.zarr",
                         [{"gaussian": {"sigma": {"z": 1, "y": 3, "x": 3}}}]))
            wait(slow, ("running",))

            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_context(viewport={"width": 1100, "height": 760}).new_page()

                def shot(name: str, full: bool = False) -> None:
                    path = out / f"dashboard-{name}.png"
                    page.screenshot(path=str(path), full_page=full)
                    written.append(path)

                page.goto(svc.url + "/")
                shot("signin")
                page.get_by_label("Token").fill(svc.token)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_selector("table.jobs")
                deadline = time.monotonic() + 120  # a running job with some progress
                while h.get(f"/jobs/{slow}").json()["progress"] < 0.2 and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1.5)  # the page has refreshed itself meanwhile
                shot("jobs")
                page.get_by_label("Spec").fill("convpipe: 1\nname: typo\ninput: camera.zarr\noutput: typo.zarr\n"
                                               "steps:\n  - gausian: {sigma: 2}\n  - sobel: {axes: yz}\n")
                page.get_by_role("button", name="Submit").click()
                page.wait_for_selector("[role=alert]")
                page.locator("#submit-title").scroll_into_view_if_needed()
                shot("submit-error")
                page.goto(f"{svc.url}/ui/jobs/{slow}")
                time.sleep(1.5)
                shot("job-running")
                page.goto(f"{svc.url}/ui/jobs/{edges}")
                page.wait_for_selector("figure.preview img")
                shot("job", full=True)
                browser.close()
            for job in h.get("/jobs").json():
                if job["state"] in ("queued", "running"):
                    h.post(f"/jobs/{job['id']}/cancel")
    return written


if __name__ == "__main__":
    for p in main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(f"wrote {p}")
