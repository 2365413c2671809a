from __future__ import annotations

from tests.support import REPO


def test_openapi_yaml_matches_the_app():
    """openapi.yaml is generated from the app; regenerate with `make openapi` when this fails."""
    from app.openapi_export import openapi_yaml

    committed = (REPO / "openapi.yaml").read_text()
    assert committed == openapi_yaml(), "openapi.yaml drifted from the app: run `make openapi` and commit it"


def test_openapi_documents_every_public_route():
    import yaml

    spec = yaml.safe_load((REPO / "openapi.yaml").read_text())
    paths = spec["paths"]
    for path, method in [
        ("/v1/files", "post"),
        ("/v1/files", "get"),
        ("/v1/files/{file_id}", "delete"),
        ("/v1/files/{file_id}/content", "get"),
        ("/v1/fine_tuning/jobs", "post"),
        ("/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel", "post"),
        ("/v1/fine_tuning/jobs/{fine_tuning_job_id}/events", "get"),
        ("/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints", "get"),
        ("/v1/fine_tuning/alpha/graders/run", "post"),
        ("/v1/fine_tuning/alpha/graders/validate", "post"),
        ("/v1/models", "get"),
    ]:
        assert method in paths[path], (path, method)
    assert "multipart/form-data" in paths["/v1/files"]["post"]["requestBody"]["content"]
