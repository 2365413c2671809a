"""The dashboard in headless Chromium against a live API: key prompt, jobs list, a job page with reward
curves, checkpoints, live-updating events, and the try-the-model box. Saves a screenshot of the job page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from core import jobstore
from core.db.models import Job
from tests.dashboard.conftest import TRAIN, VALID, Seeded, metrics_event

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dashboard")]  # one API, one Chromium


def open_with_key(page: Any, seeded: Seeded, path: str) -> None:
    page.goto(seeded.service.base_url.removesuffix("/v1") + path)
    page.fill("#auth-key", seeded.key)
    page.click("#auth-form button")
    page.wait_for_selector("#content:not([hidden])")


def test_shell_holds_no_data_and_loads_nothing_from_elsewhere(seeded: Seeded) -> None:
    base = seeded.service.base_url.removesuffix("/v1")
    for path in ("/dashboard/", f"/dashboard/jobs/{seeded.job_id}"):
        resp = httpx.get(base + path)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
        assert seeded.fine_tuned_model not in resp.text and "tiny-test" not in resp.text
        assert "http://" not in resp.text and "https://" not in resp.text  # no CDN, no external asset
        assert "default-src 'self'" in resp.headers["content-security-policy"]
    assert httpx.get(base + "/dashboard", follow_redirects=False).status_code == 307
    js = httpx.get(base + "/dashboard/static/dashboard.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert httpx.get(base + "/dashboard/static/..%2Fother.py").status_code == 404
    assert "/dashboard" not in json.dumps(httpx.get(base + "/openapi.json").json()["paths"])


def test_key_prompt_rejects_a_wrong_key(page: Any, seeded: Seeded) -> None:
    page.goto(seeded.service.base_url.removesuffix("/v1") + "/dashboard/")
    assert page.is_visible("#auth") and not page.is_visible("#content")
    page.fill("#auth-key", "sk-wrong")
    page.click("#auth-form button")
    page.wait_for_selector("#auth-error:not([hidden])")
    assert "Incorrect API key" in page.inner_text("#auth-error")
    assert page.evaluate("sessionStorage.getItem('openrft_api_key')") is None
    assert page.js_errors == []


def test_jobs_list_links_to_the_job(page: Any, seeded: Seeded) -> None:
    open_with_key(page, seeded, "/dashboard/")
    row = page.wait_for_selector(f"tr[data-job-id='{seeded.job_id}']")
    assert "succeeded" in row.inner_text() and seeded.fine_tuned_model in row.inner_text()
    page.click(f"tr[data-job-id='{seeded.job_id}'] a")
    page.wait_for_url(f"**/dashboard/jobs/{seeded.job_id}")
    # the key was asked once: the job page opens straight away in the same tab
    page.wait_for_selector("#content:not([hidden])")
    assert not page.is_visible("#auth")
    assert page.js_errors == []


def test_job_page_curves_checkpoints_events_and_screenshot(
    page: Any, seeded: Seeded, tmp_path: Path, record_property: Any
) -> None:
    open_with_key(page, seeded, f"/dashboard/jobs/{seeded.job_id}")
    page.wait_for_selector("#chart polyline[data-series='valid']")
    assert page.locator("#chart circle[data-series='train']").count() == len(TRAIN)
    assert page.locator("#chart circle[data-series='valid']").count() == len(VALID)
    train_points = page.get_attribute("#chart polyline[data-series='train']", "points").split()
    ys = [float(p.split(",")[1]) for p in train_points]
    assert ys == sorted(ys, reverse=True)  # a rising reward is drawn rising (SVG y grows downwards)
    assert "validation mean reward (last 0.620)" in page.inner_text("#chart-legend")

    assert "succeeded" in page.inner_text("#job-status")
    assert seeded.fine_tuned_model in page.inner_text("#job-facts")
    expect(page.locator("#checkpoints tbody tr")).to_have_count(3)
    steps = page.eval_on_selector_all("#checkpoints tbody tr", "rows => rows.map(r => r.dataset.step)")
    assert steps == ["4", "8", "12"]
    assert "0.620" in page.inner_text("#checkpoints tr[data-step='12']")

    # the newest RL step's rollouts, model text shown as text (the seeded worst completion is a script tag)
    assert "step 12, 4 completions" in page.inner_text("#rollouts-step")
    assert page.inner_text("#rollouts .prompt") == "Question 12: what is <b>12</b> + 1?"
    assert "reward 1.000" in page.inner_text(".rollout[data-rank='best']")
    assert page.inner_text(".rollout[data-rank='best'] pre") == "12 + 1 = 13"
    assert page.inner_text(".rollout[data-rank='worst'] pre") == "<script>alert(1)</script>"
    assert page.locator("#rollouts script, #rollouts b").count() == 0
    assert not page.is_visible("#rollouts-empty")

    events = page.inner_text("#events")
    assert events.index("The job has successfully completed") < events.index("Created fine-tuning job")
    assert page.locator("#events li.level-warn").count() == 1

    shot = tmp_path / "job-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    record_property("screenshot", str(shot))
    print(f"job page screenshot: {shot}")
    assert page.js_errors == []


def test_events_and_curve_update_live(page: Any, seeded: Seeded) -> None:
    open_with_key(page, seeded, f"/dashboard/jobs/{seeded.job_id}")
    page.wait_for_selector("#chart polyline[data-series='train']")
    with seeded.session() as session:
        job = session.query(Job).filter_by(id=seeded.job_id).one()
        job.status = "running"  # an active job is polled every 2 s
        jobstore.add_event(session, job.pk, "Resumed for one more step")
        jobstore.add_event(session, job.pk, **metrics_event(13, 13, train=0.7, valid=0.66, stage="rl"))
        session.commit()
    try:
        # (locator waits: the page's CSP forbids the string evaluation wait_for_function would use)
        expect(page.locator("#chart circle[data-series='train']")).to_have_count(
            len(TRAIN) + 1, timeout=20_000
        )
        page.wait_for_selector("#events li:first-child:has-text('Step 13/13')")
        expect(page.locator("#rollouts-step")).to_contain_text("step 13")
        assert "running" in page.inner_text("#job-status")
    finally:
        with seeded.session() as session:
            session.query(Job).filter_by(id=seeded.job_id).one().status = "succeeded"
            session.commit()
    assert page.js_errors == []


def test_try_box_streams_the_reply(page: Any, seeded: Seeded) -> None:
    sent: list[dict[str, Any]] = []

    def fake_completions(route: Any) -> None:
        # The serving engine is not part of this test: answer the page's request the way the API streams.
        sent.append(
            {"body": json.loads(route.request.post_data), "auth": route.request.headers["authorization"]}
        )
        chunks = [
            {"choices": [{"index": 0, "delta": {"content": text}}]} for text in ("The answer", " is B.")
        ]
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body=body)

    page.route("**/v1/chat/completions", fake_completions)
    open_with_key(page, seeded, f"/dashboard/jobs/{seeded.job_id}")
    expect(page.locator("#try-model option")).to_have_count(4)  # the final model and 3 checkpoints
    options = page.eval_on_selector_all("#try-model option", "opts => opts.map(o => o.value)")
    assert options[0] == seeded.fine_tuned_model and options[1].endswith(":ckpt-step-12")
    page.fill("#try-input", "What is 7 + 8?")
    page.click("#try-send")
    expect(page.locator("#try-output")).to_have_text("The answer is B.")
    assert sent[0]["body"]["model"] == seeded.fine_tuned_model and sent[0]["body"]["stream"] is True
    assert sent[0]["body"]["messages"] == [{"role": "user", "content": "What is 7 + 8?"}]
    assert sent[0]["auth"] == f"Bearer {seeded.key}"

    page.unroute("**/v1/chat/completions")
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(
            status=404,
            headers={"content-type": "application/json"},
            body=json.dumps({"error": {"message": "No such model: 'x'.", "type": "invalid_request_error"}}),
        ),
    )
    page.click("#try-send")
    page.wait_for_selector("#try-error:not([hidden])")
    assert page.inner_text("#try-error") == "No such model: 'x'."
    assert page.js_errors == []


def test_a_supervised_job_shows_its_loss_and_no_rl_panels(page: Any, seeded: Seeded, tmp_path: Path) -> None:
    from openrft import OpenRFT
    from tests.support import supervised_rows

    rows = "".join(json.dumps(r) + "\n" for r in supervised_rows(4)).encode()
    with OpenRFT(api_key=seeded.key, base_url=seeded.service.base_url) as client:
        train = client.files.create(rows, filename="sft.jsonl")
        job_id = client.fine_tuning.jobs.create(
            model="tiny-test", training_file=train.id, method={"type": "supervised"}
        ).id
    losses = [2.4, 1.9, 1.5, 1.2]
    with seeded.session() as session:
        job = session.query(Job).filter_by(id=job_id).one()
        job.status = "running"
        for step, loss in enumerate(losses, start=1):
            data = {"step": step, "total_steps": len(losses), "stage": "sft", "train_loss": loss}
            if step % 2 == 0:
                data["valid_loss"] = loss + 0.2
            jobstore.add_event(
                session, job.pk, f"Step {step}/4 (sft), train loss={loss}", type="metrics", data=data
            )
        jobstore.register_checkpoint(
            session, job, 4, "/nonexistent/sft-4", {"step": 4, "train_loss": 1.2, "valid_loss": 1.4}
        )
        session.commit()

    open_with_key(page, seeded, f"/dashboard/jobs/{job_id}")
    page.wait_for_selector("#chart polyline[data-series='train']")
    assert page.text_content("#chart-title") == "Loss per step"
    assert page.locator("#chart circle[data-series='train']").count() == len(losses)
    assert page.locator("#chart circle[data-series='valid']").count() == 2
    ys = [
        float(p.split(",")[1])
        for p in page.get_attribute("#chart polyline[data-series='train']", "points").split()
    ]
    assert ys == sorted(ys)  # a falling loss is drawn falling (SVG y grows downwards)
    assert "train loss (last 1.200)" in page.inner_text("#chart-legend")
    assert not page.is_visible("#rollouts-card")  # RL panels are hidden for supervised jobs
    expect(page.locator("#checkpoints tbody tr")).to_have_count(1)
    assert page.text_content("#checkpoints-train") == "Train loss"
    assert "1.400" in page.inner_text("#checkpoints tr[data-step='4']")
    page.screenshot(path=str(tmp_path / "supervised.png"), full_page=True)
    assert page.js_errors == []


def test_a_running_jobs_page_fails_no_request(page: Any, seeded: Seeded) -> None:
    """A running job's page, polled a few times: no request fails and the console stays clean (no 404)."""
    failed: list[str] = []
    console: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    with seeded.session() as session:
        job = session.query(Job).filter_by(id=seeded.job_id).one()
        job.status = "running"
        session.commit()
    try:
        open_with_key(page, seeded, f"/dashboard/jobs/{seeded.job_id}")
        page.wait_for_selector("#chart polyline[data-series='train']")
        page.wait_for_timeout(5000)  # two more polls of a running job
        expect(page.locator("#job-status")).to_contain_text("running")
    finally:
        with seeded.session() as session:
            session.query(Job).filter_by(id=seeded.job_id).one().status = "succeeded"
            session.commit()
    assert failed == [] and console == [], (failed, console)
    assert page.js_errors == []


def test_the_login_link_serve_printed_opens_the_dashboard_once(browser: Any, seeded: Seeded) -> None:
    """`openrft serve` prints a one-time link: it opens the dashboard with the local key, no key to paste, and
    leaves no token in the address bar; the same link a second time asks for the key and says why."""
    log = (seeded.service.home / "api.log").read_text()
    (line,) = [x for x in log.splitlines() if "#login=" in x]
    link = line[line.index("http://") :].strip()
    assert link.startswith(seeded.service.base_url.removesuffix("/v1") + "/dashboard/#login=")
    first = browser.new_context()
    try:
        page = first.new_page()
        page.goto(link)
        page.wait_for_selector("#content:not([hidden])")
        assert not page.is_visible("#auth") and "#login" not in page.url
        assert page.evaluate("sessionStorage.getItem('openrft_api_key')") == seeded.service.api_key
    finally:
        first.close()
    again = browser.new_context()
    try:
        page = again.new_page()
        page.goto(link)
        page.wait_for_selector("#auth-error:not([hidden])")
        assert "used already or has expired" in page.inner_text("#auth-error")
    finally:
        again.close()
