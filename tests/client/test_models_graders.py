"""client.models and client.graders against the live service."""

from __future__ import annotations

from pathlib import Path

import pytest

from openrft import AuthenticationError, BadRequestError, NotFoundError, OpenRFT, OpenRFTError
from openrft.types import Model
from tests.support import STRING_CHECK_GRADER, LiveService


def test_models_list_retrieve_delete(client: OpenRFT) -> None:
    page = client.models.list()
    ids = [m.id for m in page]
    assert {"tiny-test", "smollm2-135m-instruct"} <= set(ids)
    tiny = client.models.retrieve("tiny-test")
    assert tiny.parent is None and tiny.owned_by == "openrft"  # the service's field, typed
    model = client.models.retrieve("smollm2-135m-instruct")
    assert (model.id, model.object) == ("smollm2-135m-instruct", "model")
    with pytest.raises(NotFoundError) as info:
        client.models.retrieve("ft:tiny-test:org:x:ftjob-missing")
    assert info.value.param == "model"
    with pytest.raises(NotFoundError):
        client.models.delete("ft:tiny-test:org:x:ftjob-missing")


def test_graders_run_and_validate(client: OpenRFT) -> None:
    ok = client.graders.run(grader=STRING_CHECK_GRADER, model_sample="12", item={"answer": "12"})
    assert (
        ok.reward == 1.0 and ok.metadata.type == "string_check" and not ok.metadata.errors.sample_parse_error
    )
    mc = {"type": "multiple_choice", "name": "mc"}
    assert (
        client.graders.run(grader=mc, model_sample="The answer is (C).", item={"answer": "C"}).reward == 1.0
    )
    assert client.graders.run(grader=mc, model_sample="Answer: B", item={"answer": "C"}).reward == 0.0
    normalized = client.fine_tuning.alpha.graders.validate(grader={**STRING_CHECK_GRADER, "operation": "neq"})
    assert normalized.to_dict()["grader"]["operation"] == "ne"
    with pytest.raises(BadRequestError) as info:
        client.graders.validate(grader={"type": "string_check", "name": "x"})
    assert info.value.code == "invalid_grader" and info.value.param


def test_wrong_key_is_an_authentication_error(live: LiveService) -> None:
    with (
        OpenRFT(api_key="sk-wrong", base_url=live.base_url) as bad,
        pytest.raises(AuthenticationError) as info,
    ):
        bad.models.list()
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"


def test_key_and_url_from_the_environment_and_key_file(
    live: LiveService, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:

    monkeypatch.setenv("OPENRFT_BASE_URL", live.base_url)
    monkeypatch.setenv("OPENRFT_API_KEY", live.api_key)
    with OpenRFT() as c:
        assert str(c.base_url) == live.base_url + "/" and c.models.retrieve("tiny-test").id == "tiny-test"
    monkeypatch.delenv("OPENRFT_API_KEY")
    monkeypatch.setenv("OPENRFT_HOME", str(tmp_path))
    with pytest.raises(OpenRFTError, match="No API key"):
        OpenRFT()
    (tmp_path / "api_key").write_text(live.api_key + "\n")  # what `openrft serve` writes on first start
    with OpenRFT() as c:
        assert c.api_key == live.api_key and c.models.retrieve("tiny-test").id == "tiny-test"
    monkeypatch.delenv("OPENRFT_BASE_URL")
    with OpenRFT() as c:
        assert str(c.base_url) == "http://127.0.0.1:8000/v1/"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-an-openai-key")  # never sent to this service
    with OpenRFT(base_url=live.base_url) as c:
        assert c.api_key == live.api_key
        copied = c.with_options(timeout=5)  # the SDK's copy keeps this client's key, URL and resources
        assert isinstance(copied, OpenRFT) and (copied.api_key, copied.base_url) == (c.api_key, c.base_url)
        assert isinstance(copied.models.retrieve("tiny-test"), Model)
    with pytest.raises(OpenRFTError, match="http"):
        OpenRFT(base_url="localhost:8000")
