"""Response models (one per file) and typed request parameters."""

from openrft.types.chat_completion import ChatCompletion, ChatCompletionMessage, CompletionUsage
from openrft.types.chat_completion_chunk import ChatCompletionChunk, ChoiceDelta
from openrft.types.file_deleted import FileDeleted
from openrft.types.file_object import FileObject
from openrft.types.fine_tuning_job import (
    STOPPED_STATUSES,
    TERMINAL_STATUSES,
    FineTuningJob,
    JobError,
    JobStatus,
)
from openrft.types.fine_tuning_job_checkpoint import CheckpointMetrics, FineTuningJobCheckpoint
from openrft.types.fine_tuning_job_event import FineTuningJobEvent
from openrft.types.grader_run_response import GraderRunResponse
from openrft.types.grader_validate_response import GraderValidateResponse
from openrft.types.model import Model
from openrft.types.model_deleted import ModelDeleted
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
