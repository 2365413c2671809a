"""Response models and typed request parameters: the SDK's own models, with this service's extensions where it
has them (a job's ``openrft`` options and ``paused`` status, a model's ``parent``)."""

from openai.types import FileDeleted, FileObject, ModelDeleted
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.completion_usage import CompletionUsage
from openai.types.fine_tuning import FineTuningJobEvent
from openai.types.fine_tuning.alpha import GraderRunResponse, GraderValidateResponse
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint
from openai.types.fine_tuning.jobs.fine_tuning_job_checkpoint import Metrics as CheckpointMetrics

from openrft.types.fine_tuning_job import (
    STOPPED_STATUSES,
    TERMINAL_STATUSES,
    FineTuningJob,
    JobError,
    JobStatus,
)
from openrft.types.model import Model
from openrft.types.openrft_options import (
    AugmentationOptions,
    EndpointOptions,
    EvalOptions,
    OpenRFTOptions,
    PRMOptions,
    ReinforcementHyperparameters,
    RLOptions,
    SFTOptions,
    SupervisedHyperparameters,
)

__all__ = [
    "STOPPED_STATUSES",
    "TERMINAL_STATUSES",
    "AugmentationOptions",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "CheckpointMetrics",
    "ChoiceDelta",
    "CompletionUsage",
    "EndpointOptions",
    "EvalOptions",
    "FileDeleted",
    "FileObject",
    "FineTuningJob",
    "FineTuningJobCheckpoint",
    "FineTuningJobEvent",
    "GraderRunResponse",
    "GraderValidateResponse",
    "JobError",
    "JobStatus",
    "Model",
    "ModelDeleted",
    "OpenRFTOptions",
    "PRMOptions",
    "RLOptions",
    "ReinforcementHyperparameters",
    "SFTOptions",
    "SupervisedHyperparameters",
]
