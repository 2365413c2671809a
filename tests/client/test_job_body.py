"""The job body ``jobs.create`` sends, and the typed OpenRFT options kept in step with the server's config."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from openrft import OpenRFTError
from openrft.resources.fine_tuning._job_body import job_body
from openrft.types import openrft_options as opts

GRADER = {"type": "string_check", "name": "g", "input": "a", "reference": "b", "operation": "eq"}


def body(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        model="m", training_file="file-1", validation_file=None, suffix=None, seed=None, metadata=None,
        integrations=None, method=None, grader=None, hyperparameters=None, openrft=None, openrft_keywords={},
    )  # fmt: skip
    base.update(kw)
    return job_body(**base)


def test_grader_shortcut_puts_hyperparameters_in_the_method() -> None:
    b = body(grader=GRADER, hyperparameters={"n_epochs": 2}, seed=0, suffix="s")
    assert b == {
        "model": "m",
        "training_file": "file-1",
        "suffix": "s",
        "seed": 0,
        "method": {
            "type": "reinforcement",
            "reinforcement": {"grader": GRADER, "hyperparameters": {"n_epochs": 2}},
        },
    }


def test_plain_hyperparameters_stay_top_level_and_method_passes_through() -> None:
    assert body(hyperparameters={"n_epochs": 1})["hyperparameters"] == {"n_epochs": 1}
    method = {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 4}}}
    assert body(method=method)["method"] == method
    with pytest.raises(OpenRFTError, match="given twice"):
        body(method=method, hyperparameters={"n_epochs": 1})
    with pytest.raises(OpenRFTError, match="not both"):
        body(method=method, grader=GRADER)
    with pytest.raises(OpenRFTError, match="type"):
        body(method={"reinforcement": {}})


def test_openrft_keywords_merge_over_the_object() -> None:
    b = body(
        openrft={"rl": {"max_steps": 4, "temperature": 0.7}, "icl_k": 1},
        openrft_keywords={"rl": {"max_steps": 8}, "icl_k": 3, "sft": None, "max_minutes": 10},
    )
    assert b["openrft"] == {"rl": {"max_steps": 8, "temperature": 0.7}, "icl_k": 3, "max_minutes": 10}
    assert "openrft" not in body(openrft_keywords={"sft": None})


def _pydantic_fields(model: Any) -> set[str]:
    return set(model.model_fields)


def test_typed_options_match_the_server_config() -> None:
    import trainer.config as config  # the server's source of truth (tests may import it; the client never does)

    pairs = [
        (opts.OpenRFTOptions, config.OpenRFTConfig),
        (opts.AugmentationOptions, config.AugmentationConfig),
        (opts.SFTOptions, config.SFTConfig),
        (opts.RLOptions, config.RLConfig),
        (opts.PRMOptions, config.PRMConfig),
        (opts.EvalOptions, config.EvalConfig),
        (opts.DistributedOptions, config.DistributedConfig),
        (opts.EndpointOptions, config.Endpoint),
        (opts.ReinforcementHyperparameters, config.ReinforcementHyperparameters),
        (opts.SupervisedHyperparameters, config.SupervisedHyperparameters),
    ]
    for typed, server in pairs:
        assert set(typing.get_type_hints(typed)) == _pydantic_fields(server), typed.__name__
    # every keyword of jobs.create that is an OpenRFT option is a field of the extension object
    from openrft.resources.fine_tuning.jobs import Jobs

    params = set(typing.get_type_hints(Jobs.create)) - {"return"}
    assert set(typing.get_type_hints(opts.OpenRFTOptions)) <= params


def test_create_sends_the_options_in_the_body_and_parses_the_job() -> None:
    """Against a scripted server: OpenAI's fields and the ``openrft`` object in one JSON body (a caller's own
    ``extra_body`` keys win), and the job parsed with its extension, through ``with_raw_response`` too."""
    import json

    from openrft import OpenRFT
    from openrft.types import FineTuningJob
    from tests.client.fake_server import Reply, fake_server

    job = {
        "id": "ftjob-1", "object": "fine_tuning.job", "created_at": 1, "model": "m", "organization_id": "org",
        "seed": 3, "status": "paused", "training_file": "file-1", "result_files": [], "hyperparameters": {},
        "openrft": {"icl_k": 3, "rl": {"max_steps": 8}},
    }  # fmt: skip
    with fake_server([Reply(200, job), Reply(200, job, {"x-request-id": "req_7"})]) as srv:
        client = OpenRFT(api_key="k", base_url=srv.base_url)
        created = client.fine_tuning.jobs.create(
            model="m", training_file="file-1", grader=GRADER, seed=3, icl_k=3, rl={"max_steps": 8},
            extra_body={"suffix": "x"},
        )  # fmt: skip
        raw = client.fine_tuning.jobs.with_raw_response.retrieve("ftjob-1")
    assert (
        isinstance(created, FineTuningJob)
        and created.openrft == job["openrft"]
        and created.status == "paused"
    )
    sent = json.loads(srv.seen[0].body)
    assert sent == {
        "model": "m",
        "training_file": "file-1",
        "seed": 3,
        "method": {"type": "reinforcement", "reinforcement": {"grader": GRADER}},
        "openrft": {"icl_k": 3, "rl": {"max_steps": 8}},
        "suffix": "x",
    }
    assert raw.headers["x-request-id"] == "req_7" and srv.seen[1].path == "/v1/fine_tuning/jobs/ftjob-1"
    assert isinstance(raw.parse(), FineTuningJob) and raw.parse().openrft == job["openrft"]
