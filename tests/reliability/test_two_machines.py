"""Two worker "machines" that share only the database, the broker and the storage: each has its own
OPENRFT_HOME (job working dirs, caches) and the API a third one. Worker A validates and trains a real RL job
on the tiny model and is SIGKILLed mid-run; its machine is then gone (its home moved out of reach). Worker B
resumes the job from what A uploaded, without A's files, and finishes it; B's machine goes too, and the API
serves the fine-tuned model from the storage alone."""

from __future__ import annotations

import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.lifecycle import TERMINAL, all_events, sdk, wait_status
from tests.reliability.conftest import Service, tiny_models_env
from tests.reliability.servers import PrivateRedis
from tests.reliability.test_worker_faults import _metrics_steps, _rl_job
from tests.support import create_database, service_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


class Machines:
    def __init__(self, root: Path, base_env: dict[str, str], api_key: str) -> None:
        self.root = root
        self.base_env = base_env
        self.api_key = api_key
        self.started: list[Service] = []

    def start(self, name: str) -> Service:
        home = self.root / name
        home.mkdir()
        svc = Service(home=home, env={}, api_key=self.api_key)
        svc.env = service_env(
            home,
            database_url=self.base_env["DATABASE_URL"],
            redis_url=self.base_env["REDIS_URL"],
            api_key=self.api_key,
            extra={k: v for k, v in self.base_env.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        )
        self.started.append(svc)
        return svc

    def lose(self, svc: Service) -> None:
        """The machine is gone: its processes and its disk."""
        for name in list(svc.named):
            svc.kill(name, signal.SIGKILL)
        svc.stop()
        shutil.move(svc.home, self.root / f"gone-{svc.home.name}")


@pytest.fixture
def machines(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Machines]:
    url, drop = create_database("openrft_rel_machines")
    redis = PrivateRedis(tmp_path_factory.mktemp("redis-machines"))
    redis.start()
    root = tmp_path_factory.mktemp("machines")
    storage = tmp_path_factory.mktemp("shared-storage")
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": redis.url,
        **tiny_models_env(tiny_model_dir, OPENRFT_STORAGE_DIR=str(storage), OPENRFT_SERVING_BACKEND="cpu"),
    }
    m = Machines(root, env, api_key=f"sk-test-{uuid.uuid4().hex}")
    try:
        yield m
    except BaseException:
        for svc in m.started:
            print(svc.logs())
        raise
    finally:
        for svc in m.started:
            svc.stop()
        redis.stop()
        drop()


def test_a_job_killed_on_one_machine_is_finished_on_another_and_served_from_a_third(machines: Machines):
    api = machines.start("api")
    api.start_api()
    client = sdk(api.base_url, api.api_key)

    a = machines.start("a")
    a.start_worker("default,gpu", name="a", beat=False)
    job = _rl_job(client, steps=4)  # a checkpoint, and an upload of the state, after every step
    wait_until(lambda: 2 in _metrics_steps(client, job.id), 300, interval=0.3, what="step 2 on machine A")
    machines.lose(a)

    b = machines.start("b")
    b.start_worker("default,gpu", name="b", beat=True)  # B's reaper notices A's lease expire
    done = wait_status(client, job.id, TERMINAL, 300)
    messages = [e.message for e in all_events(client, job.id)]
    assert done.status == "succeeded", (done.error, messages[:25])
    assert any("stopped answering" in m for m in messages), messages
    resumed = [m for m in messages if m.startswith("Resuming at step")]
    assert resumed and int(resumed[0].split()[3].rstrip(".")) >= 1, messages  # not from scratch
    assert sorted(_metrics_steps(client, job.id)) == [1, 2, 3, 4]
    # B had none of A's files: it fetched the inputs and the snapshot from the storage.
    assert (b.home / "jobs" / job.id / "data" / "training.jsonl").is_file()
    assert not (api.home / "jobs").exists() or not any((api.home / "jobs").iterdir())
    machines.lose(b)

    # The API's machine never had a working directory of the job: the model comes from the storage.
    chat = client.with_options(max_retries=8, timeout=120).chat.completions.create(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": "What is 3 + 1?"}],
        max_tokens=8,
        temperature=0,
    )
    assert chat.model == done.fine_tuned_model and chat.usage is not None and chat.usage.completion_tokens > 0
    cached = list((api.home / "cache" / "artifacts").glob("*/adapter_model.safetensors"))
    assert cached, "the adapter was not fetched into the API machine's cache"
