from __future__ import annotations

from tests.app.conftest import assert_error, make_key


def test_lists_base_models(client, auth):
    data = client.get("/v1/models", headers=auth).json()
    ids = [m["id"] for m in data["data"]]
    assert "smollm2-135m-instruct" in ids and "tiny-test" in ids
    assert all(m["object"] == "model" for m in data["data"])
    one = client.get("/v1/models/smollm2-135m-instruct", headers=auth).json()
    assert one["id"] == "smollm2-135m-instruct" and one["owned_by"] == "openrft"


def test_fine_tuned_models_scoped_and_deletable(client, auth):
    from core.db.models import FineTunedModel
    from core.db.session import session_scope

    other = {"Authorization": f"Bearer {make_key()}"}
    org_pk = None
    from app import auth as auth_mod

    with session_scope() as s:
        row = auth_mod.find_key(s, auth["Authorization"].split()[1])
        assert row is not None
        org_pk = row.org_pk
        s.add(
            FineTunedModel(
                id="ft:tiny-test:x::ftjob-abc",
                org_pk=org_pk,
                base_model="tiny-test",
                parent="tiny-test",
                path="/nowhere",
            )
        )
    model = client.get("/v1/models/ft:tiny-test:x::ftjob-abc", headers=auth).json()
    assert model["parent"] == "tiny-test"
    assert_error(client.get("/v1/models/ft:tiny-test:x::ftjob-abc", headers=other), 404)
    assert_error(client.delete("/v1/models/ft:tiny-test:x::ftjob-abc", headers=other), 404)
    assert client.delete("/v1/models/ft:tiny-test:x::ftjob-abc", headers=auth).json()["deleted"] is True
    assert_error(client.get("/v1/models/ft:tiny-test:x::ftjob-abc", headers=auth), 404)
    assert_error(client.get("/v1/models/nope", headers=auth), 404)


def test_base_models_cannot_be_deleted(client, auth):
    err = assert_error(client.delete("/v1/models/tiny-test", headers=auth), 403, code="model_not_deletable")
    assert err["type"] == "permission_error" and err["param"] == "model"
    assert client.get("/v1/models/tiny-test", headers=auth).status_code == 200
