from __future__ import annotations

import pytest

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


def test_options_doc_is_generated_from_the_config_models():
    """docs/options.md lists every job option; regenerate with `make openapi` when this fails."""
    from app.options_doc import options_markdown
    from trainer.config import OpenRFTConfig

    committed = (REPO / "docs" / "options.md").read_text()
    assert committed == options_markdown(), "docs/options.md drifted: run `make openapi` and commit it"
    for name in OpenRFTConfig.model_fields:
        assert f"`{name}`" in committed or f"`openrft.{name}`" in committed, name
    for name in ("rl.num_generations", "prm.alpha", "augmentation.n_variants"):
        section, field = name.split(".")
        assert f"## `openrft.{section}`" in committed and f"| `{field}` |" in committed


def test_openapi_types_the_extension_the_graders_and_bearer_auth():
    import yaml

    from trainer.graders.validation import GRADER_TYPES

    spec = yaml.safe_load((REPO / "openapi.yaml").read_text())
    schemas = spec["components"]["schemas"]
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: Authorization: Bearer sk-openrft-...",
    }
    create = spec["paths"]["/v1/fine_tuning/jobs"]["post"]
    assert create["security"] == [{"bearerAuth": []}]
    job = schemas["JobCreate"]["properties"]
    assert {"$ref": "#/components/schemas/OpenRFTConfig"} in job["openrft"]["anyOf"]
    assert schemas["OpenRFTConfig"]["properties"]["rl"]["$ref"] == "#/components/schemas/RLConfig"
    assert "num_generations" in schemas["RLConfig"]["properties"]
    grader = schemas["Grader"]
    assert set(grader["discriminator"]["mapping"]) == set(GRADER_TYPES)
    run = schemas["GraderRunRequest"]["properties"]["grader"]
    assert run["allOf"] == [{"$ref": "#/components/schemas/Grader"}]
    hp = schemas["ReinforcementMethod"]["properties"]["hyperparameters"]["anyOf"]
    assert {"$ref": "#/components/schemas/ReinforcementHyperparameters"} in hp


GRADER_EXAMPLES = [
    {
        "type": "string_check",
        "name": "a",
        "input": "{{ sample.output_text }}",
        "reference": "x",
        "operation": "eq",
    },
    {
        "type": "text_similarity",
        "input": "{{ sample.output_text }}",
        "reference": "x",
        "evaluation_metric": "bleu",
    },
    {
        "type": "score_model",
        "model": "smollm2-135m-instruct",
        "input": [{"role": "user", "content": "Rate {{ sample.output_text }}"}],
        "range": [0, 10],
        "sampling_params": {"temperature": 0.0, "max_completions_tokens": 32},
    },
    {
        "type": "label_model",
        "model": "m",
        "input": [{"role": "system", "content": "Label it"}, {"role": "user", "content": "{{ item.q }}"}],
        "labels": ["good", "bad"],
        "passing_labels": ["good"],
    },
    {"type": "python", "source": "def grade(sample, item):\n    return 1.0\n"},
    {
        "type": "multi",
        "graders": {
            "a": {
                "type": "string_check",
                "input": "{{ sample.output_text }}",
                "reference": "x",
                "operation": "eq",
            },
            "b": {"type": "multiple_choice"},
        },
        "calculate_output": "0.5 * a + 0.5 * b",
    },
    {"type": "multiple_choice", "labels": ["A", "B", "C"]},
    {"type": "endpoint", "url": "https://judge.example/score", "timeout_s": 5},
]


@pytest.mark.parametrize("spec", GRADER_EXAMPLES, ids=lambda s: s["type"])
def test_the_grader_schema_and_the_validator_agree(spec):
    from pydantic import TypeAdapter

    from app.schemas.graders import Grader
    from trainer.graders import validate_grader

    TypeAdapter(Grader).validate_python(spec)
    validate_grader(spec)


def test_grader_examples_cover_every_type():
    from trainer.graders.validation import GRADER_TYPES

    assert {s["type"] for s in GRADER_EXAMPLES} == set(GRADER_TYPES)
