"""The job service's dashboard, in a real browser (Playwright driving Debian's chromium) and over HTTP.

A real service subprocess serves the pages; jobs run as real job processes on real images (scikit-image's
camera). The browser tests skip, saying why, where Playwright or chromium is missing (``.ci/run`` installs
chromium); the cross-site and session checks also run without a browser, with httpx.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
import zarr

from convpipe.service.testing import RunningService, running_service

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SLOW = [{"median": {"size": 7}}]


def spec_text(name: str, inp: str, out: str, steps: list | None = None) -> str:
    return yaml.safe_dump({"convpipe": 1, "name": name, "input": inp, "output": out,
                           "steps": steps or [{"gaussian": {"sigma": 2}}, {"sobel": {"axes": "yx"}}]}, sort_keys=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    from skimage import data

    root = tmp_path_factory.mktemp("dash")
    zarr.create_array(str(root / "camera.zarr"), data=data.camera(), chunks=(256, 256))
    slow = zarr.create_array(str(root / "slow.zarr"), shape=(32, 384, 384), chunks=(1, 384, 384), dtype="float32")
    slow[:] = np.random.default_rng(5).random((32, 384, 384), dtype=np.float32)
    return root


@pytest.fixture(scope="module")
def svc(tmp_path_factory, root) -> RunningService:
    with running_service(tmp_path_factory.mktemp("dsvc"), [root], max_running=2) as s:
        yield s


def submit(svc: RunningService, text: str) -> dict:
    with svc.http() as h:
        r = h.post("/jobs", content=text)
        assert r.status_code == 201, r.text
        return r.json()


def wait_state(svc: RunningService, job_id: str, states: tuple[str, ...], timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    with svc.http() as h:
        while (job := h.get(f"/jobs/{job_id}").json())["state"] not in states:
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
    return job


def cancel_all(svc: RunningService) -> None:
    with svc.http() as h:
        for job in h.get("/jobs").json():
            if job["state"] in ("queued", "running"):
                h.post(f"/jobs/{job['id']}/cancel")


# --------------------------------------------------------------------------- without a browser (httpx)


def _signed_in(svc: RunningService) -> tuple[httpx.Client, str]:
    """An httpx client with a dashboard session, and the session's CSRF token."""
    c = httpx.Client(base_url=svc.url, trust_env=False, timeout=60)
    r = c.post("/ui/signin", data={"token": svc.token}, headers={"Origin": svc.url})
    assert r.status_code == 303 and r.headers["location"] == "/"
    page = c.get("/")
    return c, re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text).group(1)


def test_cross_site_posts_are_refused_without_a_browser(svc, root):
    """A form post counts only from the service's own pages with the session's CSRF token; a cookie never
    opens the JSON API; the cookie holds no token; sign-in redirects only within the dashboard."""
    c, csrf = _signed_in(svc)
    cookie = next(iter(c.cookies.jar))
    assert svc.token not in cookie.value and len(cookie.value) >= 40
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.expires is not None
    with svc.http() as h:
        before = len(h.get("/jobs").json())
    good = spec_text("xsite", "camera.zarr", "xsite.zarr")
    own = {"Origin": svc.url}
    cases = {
        "other origin": ({"spec": good, "csrf": csrf}, {"Origin": "http://evil.example"}),
        "other port": ({"spec": good, "csrf": csrf}, {"Origin": "http://127.0.0.1:1"}),
        "opaque origin": ({"spec": good, "csrf": csrf}, {"Origin": "null"}),
        "other referer": ({"spec": good, "csrf": csrf}, {"Referer": "http://evil.example/page"}),
        "neither": ({"spec": good, "csrf": csrf}, {}),
        "no csrf": ({"spec": good}, own),
        "wrong csrf": ({"spec": good, "csrf": "0" * 64}, own),
    }
    for what, (form, headers) in cases.items():
        r = c.post("/ui/jobs", data=form, headers=headers)
        assert r.status_code == 403, (what, r.status_code)
        assert "nothing was done" in r.text, what
    other, other_csrf = _signed_in(svc)  # another session's CSRF token is no good either
    assert c.post("/ui/jobs", data={"spec": good, "csrf": other_csrf}, headers=own).status_code == 403
    with svc.http() as h:
        assert len(h.get("/jobs").json()) == before  # nothing was queued
    # the same session, from its own page (Origin, or only a Referer), goes through
    r = c.post("/ui/jobs", data={"spec": good, "csrf": csrf}, headers={"Referer": svc.url + "/"})
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/jobs/")
    job_id = r.headers["location"].rsplit("/", 1)[1]
    wait_state(svc, job_id, ("succeeded",))

    # cancel and sign-out are guarded the same way; the sign-in form checks its origin (login CSRF)
    slow = submit(svc, spec_text("xsite-slow", "slow.zarr", "xsite-slow.zarr", SLOW))
    assert c.post(f"/ui/jobs/{slow['id']}/cancel", data={"csrf": csrf},
                  headers={"Origin": "http://evil.example"}).status_code == 403
    assert wait_state(svc, slow["id"], ("queued", "running"))["state"] in ("queued", "running")
    assert c.post("/ui/signout", data={"csrf": csrf}, headers={"Origin": "http://evil.example"}).status_code == 403
    anon = httpx.Client(base_url=svc.url, trust_env=False)
    r = anon.post("/ui/signin", data={"token": svc.token}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and not anon.cookies
    with httpx.Client(base_url=svc.url, trust_env=False) as nxt:  # after sign-in: never to another site
        r = nxt.post("/ui/signin", data={"token": svc.token, "next": "//evil.example/x"}, headers=own)
        assert r.status_code == 303 and r.headers["location"] == "/"
        r = nxt.post("/ui/signin", data={"token": svc.token, "next": f"/ui/jobs/{job_id}"}, headers=own)
        assert r.status_code == 303 and r.headers["location"] == f"/ui/jobs/{job_id}"
    r = c.post(f"/ui/jobs/{slow['id']}/cancel", data={"csrf": csrf}, headers=own)
    assert r.status_code == 303 and wait_state(svc, slow["id"], ("cancelled",))

    # the cookie opens the pages, never the JSON API
    assert c.get("/").status_code == 200 and "New job" in c.get("/").text
    for path in ("/jobs", f"/jobs/{job_id}", f"/jobs/{job_id}/log", "/openapi.json"):
        assert c.get(path).status_code == 401, path
    assert c.post(f"/jobs/{slow['id']}/cancel").status_code == 401
    assert c.get("/jobs", headers={"Authorization": "Bearer wrong-token-0000000"}).status_code == 401
    # without a session: the sign-in page, a redirect to it, or 401 for what a script polls
    assert "Token" in anon.get("/").text and "Sign in" in anon.get("/").text
    r = anon.get(f"/ui/jobs/{job_id}")
    assert r.status_code == 303 and r.headers["location"] == f"/?next=/ui/jobs/{job_id}"
    for path in ("/ui/live/jobs", f"/ui/live/jobs/{job_id}", f"/ui/jobs/{job_id}/preview.png"):
        assert anon.get(path).status_code == 401, path
    # signing out ends the session on the server, not only in the browser
    stolen = dict(c.cookies)
    assert c.post("/ui/signout", data={"csrf": csrf}, headers=own).status_code == 303
    replay = httpx.Client(base_url=svc.url, trust_env=False, cookies=stolen)
    assert "New job" not in replay.get("/").text and replay.get("/ui/live/jobs").status_code == 401
    # pages name only the service's own resources, and say so in their security policy
    page = other.get(f"/ui/jobs/{job_id}")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert not re.search(r'(src|href|action)="(https?:)?//', page.text)
    for c_ in (c, other, anon, replay):
        c_.close()


def test_dashboard_submit_errors_and_pages_over_http(svc, root):
    """Submit errors come back as messages on the page with their lines (422), 403 and 409 too."""
    c, csrf = _signed_in(svc)
    own = {"Origin": svc.url}
    bad = "convpipe: 1\nname: typo\ninput: camera.zarr\noutput: typo.zarr\nsteps:\n  - gausian: {sigma: 2}\n" \
          "  - sobel: {axes: q}\n"
    r = c.post("/ui/jobs", data={"spec": bad, "csrf": csrf}, headers=own)
    assert r.status_code == 422
    items = re.findall(r"<li>(.*?)</li>", r.text, re.S)
    assert any("line 6" in i and "did you mean &#39;gaussian&#39;" in i for i in items), items
    assert "gausian: {sigma: 2}" in r.text  # the text is kept for fixing
    r = c.post("/ui/jobs", data={"spec": spec_text("out", "camera.zarr", "/etc/out.zarr"), "csrf": csrf}, headers=own)
    assert r.status_code == 403 and "outside the service&#39;s roots" in r.text
    slow = submit(svc, spec_text("dash-busy", "slow.zarr", "dash-busy.zarr", SLOW))
    try:
        r = c.post("/ui/jobs", data={"spec": spec_text("again", "camera.zarr", "dash-busy.zarr"), "csrf": csrf},
                   headers=own)
        assert r.status_code == 409 and f"job {slow['id']}" in r.text
        assert c.get("/ui/jobs/nope").status_code == 404
        live = c.get("/ui/live/jobs")
        assert live.status_code == 200 and f"/ui/jobs/{slow['id']}" in live.text and "<html" not in live.text
        one = c.get(f"/ui/live/jobs/{slow['id']}")
        assert one.status_code == 200 and "X-Refresh" not in one.headers and "Cancel" in one.text
    finally:
        cancel_all(svc)
    one = c.get(f"/ui/live/jobs/{wait_state(svc, slow['id'], ('cancelled',))['id']}")
    assert one.headers["x-refresh"] == "stop" and "Cancel" not in one.text  # a job that ended: polling stops
    c.close()


# --------------------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[test]')")
    exe = os.environ.get("CONVPIPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(exe):
        pytest.skip("no chromium browser here (apt-get install chromium; .ci/run installs it)")
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
    except Error as e:
        pw.stop()
        pytest.skip(f"chromium at {exe} does not start: {str(e).splitlines()[0]}")
    yield b
    b.close()
    pw.stop()


@pytest.fixture()
def page(browser, svc):
    ctx = browser.new_context(viewport={"width": 1100, "height": 800})
    ctx.set_default_timeout(60_000)
    p = ctx.new_page()
    outside: list[str] = []
    p.on("request", lambda req: outside.append(req.url)
         if not (req.url.startswith(svc.url) or req.url.startswith("data:")) else None)
    p.outside = outside  # a test that visits another site on purpose takes it out
    yield p
    ctx.close()
    assert not outside, f"the dashboard fetched from outside the service: {outside}"


def sign_in(page, svc: RunningService) -> None:
    page.goto(svc.url + "/")
    page.get_by_label("Token").fill(svc.token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Jobs").wait_for()


def test_sign_in(page, svc):
    page.goto(svc.url + "/")
    assert page.get_by_role("button", name="Sign in").is_visible()
    page.get_by_label("Token").fill("not-the-token-of-this-service")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").filter(has_text="not this service's token").wait_for()
    assert page.context.cookies() == []
    assert page.get_by_label("Token").is_visible()

    sign_in(page, svc)
    assert page.get_by_label("Spec").is_visible() and page.get_by_role("button", name="Submit").is_visible()
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert time.time() + 3600 < cookie["expires"] < time.time() + 13 * 3600  # it expires, in hours
    assert svc.token not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # scripts cannot read it
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Token").wait_for()
    assert page.context.cookies() == []


def test_live_progress_without_reloading(page, svc):
    job = submit(svc, spec_text("live", "slow.zarr", "live.zarr", SLOW))
    try:
        sign_in(page, svc)
        bar = page.get_by_role("progressbar", name=f"Progress of live ({job['id']})")
        bar.wait_for()
        page.evaluate("window.__notReloaded = true")
        first = float(bar.get_attribute("value"))
        assert first < 100
        page.wait_for_function(
            """([name, first]) => { const b = document.querySelector(`progress[aria-label="${name}"]`);
                                    return b && parseFloat(b.getAttribute("value")) > first; }""",
            arg=[f"Progress of live ({job['id']})", first], timeout=180_000)
        assert page.evaluate("window.__notReloaded") is True  # the bar moved in this same page
        # the job's own page follows it too, to the end, and then shows its preview
        page.get_by_role("link", name="live").click()
        page.wait_for_url(f"**/ui/jobs/{job['id']}")
        page.evaluate("window.__notReloaded = true")
        page.locator(".facts .state").filter(has_text="succeeded").wait_for(timeout=180_000)
        assert page.evaluate("window.__notReloaded") is True
        assert float(page.get_by_role("progressbar", name=f"Progress of live ({job['id']})")
                     .get_attribute("value")) == 100
        assert page.get_by_role("button", name="Cancel").count() == 0
        img = page.locator("figure.preview img")
        img.wait_for()
        page.wait_for_function("() => document.querySelector('figure.preview img').naturalWidth > 0")
        assert "z=16" in img.get_attribute("alt")  # the middle plane of 32
    finally:
        cancel_all(svc)


def test_submit_with_an_error_then_preview(page, svc, root):
    sign_in(page, svc)
    page.get_by_label("Spec").fill("convpipe: 1\nname: cam\ninput: camera.zarr\noutput: cam-edges.zarr\n"
                                   "steps:\n  - gausian: {sigma: 2}\n  - sobel: {axes: yx}\n")
    page.get_by_role("button", name="Submit").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "line 6" in alert.inner_text() and "did you mean 'gaussian'" in alert.inner_text()
    assert "gausian" in page.get_by_label("Spec").input_value()  # kept, to fix in place
    page.get_by_label("Spec").fill(page.get_by_label("Spec").input_value().replace("gausian", "gaussian"))
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url(re.compile(r".*/ui/jobs/[0-9a-f]{12}$"))
    job_id = page.url.rsplit("/", 1)[1]
    page.locator(".facts .state").filter(has_text="succeeded").wait_for(timeout=180_000)
    img = page.locator("figure.preview img")
    img.wait_for()
    page.wait_for_function("() => document.querySelector('figure.preview img').naturalWidth > 0")
    assert page.evaluate("document.querySelector('figure.preview img').naturalWidth") == 512  # one px per voxel
    assert "cam-edges.zarr" in img.get_attribute("alt")
    plan = page.get_by_label("Plan of cam").inner_text()
    assert "plan for 'cam'" in plan and "sobel" in plan
    assert "succeeded" in page.get_by_label("Log of cam").inner_text()
    png = page.request.get(f"{svc.url}/ui/jobs/{job_id}/preview.png")
    assert png.status == 200 and png.headers["content-type"] == "image/png" and png.body()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cancel_from_the_job_page(page, svc, root):
    job = submit(svc, spec_text("to-cancel", "slow.zarr", "to-cancel.zarr", SLOW))
    try:
        sign_in(page, svc)
        page.goto(f"{svc.url}/ui/jobs/{job['id']}")
        page.locator(".facts .state").filter(has_text="running").wait_for(timeout=120_000)
        page.get_by_role("button", name="Cancel").click()
        page.locator(".facts .state").filter(has_text="cancelled").wait_for(timeout=60_000)
        assert page.get_by_role("button", name="Cancel").count() == 0
        assert wait_state(svc, job["id"], ("cancelled",))["state"] == "cancelled"
        out = root / "to-cancel.zarr"
        if out.exists():  # the partial output stays marked incomplete
            assert zarr.open_array(str(out)).attrs["convpipe"]["complete"] is False
    finally:
        cancel_all(svc)


def test_a_cross_site_form_is_refused_in_the_browser(page, svc):
    """A page of another origin posting a form to the dashboard, in a signed-in browser, does nothing."""
    job = submit(svc, spec_text("target", "slow.zarr", "target.zarr", SLOW))
    evil = f"""<!doctype html><form method="post" action="{svc.url}/ui/jobs/{job['id']}/cancel">
               <input name="csrf" value="guess"><button>Win a prize</button></form>"""

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(evil.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    evil_url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        sign_in(page, svc)
        page.goto(evil_url)
        with page.expect_navigation():
            page.get_by_role("button", name="Win a prize").click()
        assert "Refused" in page.content() and "not sent from this service" in page.content()
        page.outside[:] = [u for u in page.outside if not u.startswith(evil_url)]
        assert wait_state(svc, job["id"], ("queued", "running"))["state"] in ("queued", "running")
    finally:
        server.shutdown()
        cancel_all(svc)


def test_pages_read_fine_with_scripts_off(browser, svc):
    job = submit(svc, spec_text("noscript", "camera.zarr", "noscript.zarr"))
    wait_state(svc, job["id"], ("succeeded",))
    ctx = browser.new_context(java_script_enabled=False)
    try:
        page = ctx.new_page()
        sign_in(page, svc)
        row = page.locator("tr", has=page.get_by_role("link", name="noscript"))
        assert "succeeded" in row.inner_text() and "100%" in row.inner_text()
        page.get_by_role("link", name="noscript").click()
        assert "succeeded" in page.locator(".facts").inner_text()
        assert "plan for 'noscript'" in page.get_by_label("Plan of noscript").inner_text()
        assert page.locator("figure.preview img").evaluate("i => i.complete && i.naturalWidth > 0")
    finally:
        ctx.close()
