"""The graders endpoints through the official `openai` SDK (its transport is the app's test client)."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI

from tests.app.conftest import assert_error


@pytest.fixture
def sdk(client, key) -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)


STRING_CHECK = {
    "type": "string_check",
    "name": "exact",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.answer }}",
    "operation": "eq",
}


def test_run_string_check_through_the_sdk(sdk):
    hit = sdk.fine_tuning.alpha.graders.run(grader=STRING_CHECK, model_sample="42", item={"answer": "42"})
    assert hit.reward == 1.0
    assert hit.metadata.name == "exact" and hit.metadata.type == "string_check"
    assert hit.metadata.errors.invalid_variable_error is False
    miss = sdk.fine_tuning.alpha.graders.run(grader=STRING_CHECK, model_sample="41", item={"answer": "42"})
    assert miss.reward == 0.0


def test_run_multi_reports_sub_rewards(sdk):
    grader = {
        "type": "multi",
        "name": "combo",
        "graders": {
            "exact": STRING_CHECK,
            "fuzzy": {
                "type": "text_similarity",
                "name": "fuzzy",
                "input": "{{ sample.output_text }}",
                "reference": "{{ item.answer }}",
                "evaluation_metric": "fuzzy_match",
            },
        },
        "calculate_output": "0.5 * exact + 0.5 * fuzzy",
    }
    result = sdk.fine_tuning.alpha.graders.run(grader=grader, model_sample="42", item={"answer": "42"})
    assert result.reward == pytest.approx(1.0)
    assert set(result.sub_rewards) == {"exact", "fuzzy"}


def test_missing_template_variable_scores_zero_and_is_reported(sdk):
    result = sdk.fine_tuning.alpha.graders.run(grader=STRING_CHECK, model_sample="42", item={"other": 1})
    assert result.reward == 0.0
    assert result.metadata.errors.invalid_variable_error is True


def test_older_reference_answer_field_is_accepted(client, auth):
    grader = {**STRING_CHECK, "reference": "{{ item.reference_answer }}"}
    resp = client.post(
        "/v1/fine_tuning/alpha/graders/run",
        headers=auth,
        json={"grader": grader, "model_sample": "yes", "reference_answer": "yes"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["reward"] == 1.0


def test_validate_normalizes_and_rejects(sdk, client, auth):
    ok = sdk.fine_tuning.alpha.graders.validate(grader={**STRING_CHECK, "operation": "neq"})
    assert ok.grader.operation in ("ne", "neq")
    with pytest.raises(openai.BadRequestError) as info:
        sdk.fine_tuning.alpha.graders.validate(grader={**STRING_CHECK, "operation": "contains"})
    assert info.value.body["param"].startswith("grader")
    err = assert_error(
        client.post(
            "/v1/fine_tuning/alpha/graders/validate",
            headers=auth,
            json={
                "grader": {
                    "type": "multi",
                    "name": "m",
                    "graders": {"a": STRING_CHECK},
                    "calculate_output": "a +",
                }
            },
        ),
        400,
    )
    assert err["param"].startswith("grader")


def test_python_grader_runs_jailed_away_from_the_service_data(sdk, app_settings):
    # The API process can see OPENRFT_HOME (its database and uploads); the grader's jail must not.
    home = str(app_settings.home)
    assert __import__("os").path.isdir(home)
    source = f"import os\ndef grade(sample, item):\n    return 0.0 if os.path.exists({home!r}) else 1.0\n"
    result = sdk.fine_tuning.alpha.graders.run(
        grader={"type": "python", "name": "py", "source": source}, model_sample="x", item={}
    )
    assert result.reward == 1.0


def test_graders_need_auth(client):
    assert_error(client.post("/v1/fine_tuning/alpha/graders/validate", json={"grader": STRING_CHECK}), 401)


def test_graders_run_outside_the_api_process(sdk, monkeypatch):
    """Grading happens in the grading pool's processes: the API process never loads what graders need
    (torch for cosine). Poisoning the in-process grader proves the call went elsewhere."""
    import trainer.graders
    import trainer.graders.engine

    def poisoned(*args, **kwargs):
        raise AssertionError("run_grader was called inside the API process")

    monkeypatch.setattr(trainer.graders, "run_grader", poisoned)
    monkeypatch.setattr(trainer.graders.engine, "run_grader", poisoned)
    grader = {
        "type": "text_similarity",
        "name": "cos",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.ref }}",
        "evaluation_metric": "cosine",
    }
    same = sdk.fine_tuning.alpha.graders.run(
        grader=grader, model_sample="The cat sat on the mat.", item={"ref": "The cat sat on the mat."}
    )
    other = sdk.fine_tuning.alpha.graders.run(
        grader=grader, model_sample="Quarterly revenue grew.", item={"ref": "The cat sat on the mat."}
    )
    assert same.reward == pytest.approx(1.0, abs=1e-3)
    assert other.reward < 0.5


def test_python_graders_have_the_packages_openai_lists(sdk):
    """OpenAI's python grader sandbox offers these; grader code written for it must run here unchanged."""
    source = (
        "import deepdiff, jsonschema, sqlparse, numpy, scipy, sympy, pandas, rapidfuzz, sklearn, yaml, nltk\n"
        "import pydantic, rouge_score\n"
        "def grade(sample, item):\n"
        "    same = not deepdiff.DeepDiff({'a': [1, 2]}, {'a': [1, 2]})\n"
        "    jsonschema.validate({'n': 1}, {'type': 'object', 'properties': {'n': {'type': 'integer'}}})\n"
        "    parsed = sqlparse.parse(sample['output_text'])[0].get_type() == 'SELECT'\n"
        "    return 1.0 if same and parsed else 0.0\n"
    )
    result = sdk.fine_tuning.alpha.graders.run(
        grader={"type": "python", "name": "py", "source": source}, model_sample="SELECT 1", item={}
    )
    assert result.reward == 1.0, result.metadata.errors


@pytest.mark.parametrize("bad_type", [{}, [], None, 3])
def test_a_grader_type_that_is_not_a_string_is_a_400(client, auth, bad_type):
    """Found by fuzzing the typed schema: an object as the type was a 500 (unhashable)."""
    body = {"grader": {"type": bad_type, "url": ""}, "model_sample": ""}
    assert_error(
        client.post("/v1/fine_tuning/alpha/graders/run", headers=auth, json=body), 400, param="grader.type"
    )
