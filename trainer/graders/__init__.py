"""The grader engine: every OpenAI grader type, plus OpenRFT's ``multiple_choice`` and ``endpoint``.

Used by the API (``POST /v1/fine_tuning/alpha/graders/run`` and ``/validate``, job creation) and by the
trainer (RL rewards, rejection sampling). Importing this package loads neither torch nor the metric
libraries: sentence-transformers, NLTK, sacrebleu and rouge-score are imported when a grader needs them.

    validate_grader(spec) -> normalized spec            (raises GraderValidationError with .param)
    run_grader(spec, model_sample, item, settings) -> OpenAI's graders/run response body
    with GraderEngine(spec, settings) as engine:
        result = engine.grade_batch(samples, items)     (BatchResult: scores, errors, timing, ...)
    passes(spec, score) -> bool                         ("graded correct", see pass_threshold)

Each grader type is one module of ``trainer.graders.types`` (its fields, checks and engine node), looked up
by name in ``trainer.graders.registry``.
"""

from trainer.graders.engine import BatchResult, GraderEngine, pass_threshold, passes, run_grader
from trainer.graders.errors import ERROR_KEYS, GraderValidationError, GradingError
from trainer.graders.node import Outcome
from trainer.graders.settings import GraderSettings, ModelEndpoint
from trainer.graders.templates import Sample
from trainer.graders.validation import GRADER_TYPES, validate_grader

__all__ = [
    "ERROR_KEYS",
    "GRADER_TYPES",
    "BatchResult",
    "GraderEngine",
    "GraderSettings",
    "GraderValidationError",
    "GradingError",
    "ModelEndpoint",
    "Outcome",
    "Sample",
    "pass_threshold",
    "passes",
    "run_grader",
    "validate_grader",
]
