"""A live API (uvicorn, no workers) with a job seeded straight into its database, and headless Chromium
(Debian's package, driven by Playwright; no browser is ever downloaded)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from tests.support import LiveService, service_env

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Seeded:
    service: LiveService
    key: str
    job_id: str
    fine_tuned_model: str
    db_url: str

    def session(self) -> Session:
        from core.db.session import make_engine

        return Session(make_engine(self.db_url))


def metrics_event(
    step: int, total: int, *, train: float | None, valid: float | None, stage: str
) -> dict[str, Any]:
    data: dict[str, Any] = {"step": step, "total_steps": total, "stage": stage}
    if train is not None:
        data["train_mean_reward"] = train
    if valid is not None:
        data["full_valid_mean_reward"] = valid
    if stage == "rl":  # what the trainer attaches: one group's best and worst completion
        data["rollouts"] = {
            "prompt": f"Question {step}: what is <b>{step}</b> + 1?",
            "group_size": 4,
            "completions": [
                {
                    "text": f"{step} + 1 = {step + 1}",
                    "reward": 1.0,
                    "outcome_reward": 1.0,
                    "process_reward": None,
                },
                {
                    "text": "<script>alert(1)</script>",
                    "reward": 0.0,
                    "outcome_reward": 0.0,
                    "process_reward": None,
                },
            ],
        }
    parts = [f"Step {step}/{total} ({stage})"]
    if train is not None:
        parts.append(f"train mean reward={train:.3f}")
    if valid is not None:
        parts.append(f"full validation mean reward={valid:.3f}")
    return {"message": ", ".join(parts), "type": "metrics", "data": data}


# A job that trained 12 RL steps: train reward rising, validation measured every 4 steps (and at step 0).
TRAIN = [0.12, 0.18, 0.22, 0.31, 0.35, 0.41, 0.44, 0.52, 0.55, 0.58, 0.63, 0.66]
VALID = {0: 0.25, 4: 0.38, 8: 0.5, 12: 0.62}


def seed_key(session: Session, org_name: str) -> str:
    from app import auth

    key = auth.generate_key()
    auth.add_key(session, auth.get_or_create_org(session, org_name), key)
    session.commit()
    return key


def create_job(base_url: str, key: str) -> str:
    """A real job row made through the API (no worker runs, so it stays where the test puts it)."""
    from openrft import OpenRFT
    from tests.support import STRING_CHECK_GRADER, arithmetic_rows

    rows = "".join(json.dumps(r) + "\n" for r in arithmetic_rows(4)).encode()
    with OpenRFT(api_key=key, base_url=base_url) as client:
        train = client.files.create(rows, filename="train.jsonl")
        job = client.fine_tuning.jobs.create(
            model="tiny-test", training_file=train.id, validation_file=train.id, grader=STRING_CHECK_GRADER,
            suffix="dash",
        )  # fmt: skip
    return job.id


def seed_training(session: Session, job_id: str) -> str:
    """The events and checkpoints of a finished run, written the way the worker writes them."""
    from core import jobstore
    from core.db.base import utcnow
    from core.db.models import Job

    job = session.query(Job).filter_by(id=job_id).one()
    job.status = "running"
    jobstore.add_event(session, job.pk, "Fine-tuning job started")
    jobstore.add_event(session, job.pk, **metrics_event(0, 12, train=None, valid=VALID[0], stage="eval"))
    for step, train in enumerate(TRAIN, start=1):
        jobstore.add_event(
            session, job.pk, **metrics_event(step, 12, train=train, valid=VALID.get(step), stage="rl")
        )
        if step in VALID:
            metrics = {
                "step": step,
                "full_valid_mean_reward": VALID[step],
                "train_mean_reward": train,
                "train_loss": 0.1,
            }
            jobstore.register_checkpoint(session, job, step, f"/nonexistent/step-{step}", metrics)
    jobstore.add_event(session, job.pk, "Grader error on 1 sample: sample_parse_error", level="warn")
    job.status = "succeeded"
    job.finished_at = utcnow()
    job.fine_tuned_model = jobstore.fine_tuned_model_name(job)
    jobstore.add_event(session, job.pk, "The job has successfully completed")
    session.commit()
    return job.fine_tuned_model


@pytest.fixture(scope="session")  # test_dashboard and test_docs_pages: one API
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    home = tmp_path_factory.mktemp("dashboard-home")
    svc = LiveService(home=home, env={})
    svc.env = service_env(
        home, database_url=None, redis_url=None, api_key=svc.api_key,
        extra={"OPENRFT_BASE_MODELS": json.dumps({"tiny-test": str(home / "no-weights-needed")})},
    )  # fmt: skip
    try:
        svc.start_api()  # runs the migrations on the home's SQLite database
        seeded = Seeded(svc, "", "", "", f"sqlite:///{home / 'openrft.db'}")
        with seeded.session() as session:
            seeded.key = seed_key(session, f"dash-{uuid.uuid4().hex[:8]}")
        seeded.job_id = create_job(svc.base_url, seeded.key)
        with seeded.session() as session:
            seeded.fine_tuned_model = seed_training(session, seeded.job_id)
        yield seeded
    except BaseException:
        print(svc.logs())
        raise
    finally:
        svc.stop()


@pytest.fixture(
    scope="module"
)  # Playwright's sync API marks an event loop running in this thread while it is
def browser() -> Iterator[
    Any
]:  # open: closed with the module, so later tests on this worker may use asyncio.run
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors  # uncaught exceptions in the page's script
    try:
        yield page
    finally:
        context.close()
