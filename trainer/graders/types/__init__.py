"""The built-in grader types, one module each, registered in this order (the order error messages and the
OpenAPI document list them in): OpenAI's types, then OpenRFT's ``multiple_choice`` and ``endpoint``."""

from __future__ import annotations

from trainer.graders import registry
from trainer.graders.types.endpoint import Endpoint
from trainer.graders.types.label_model import LabelModel
from trainer.graders.types.multi import Multi
from trainer.graders.types.multiple_choice import MultipleChoice
from trainer.graders.types.python import Python
from trainer.graders.types.score_model import ScoreModel
from trainer.graders.types.string_check import StringCheck
from trainer.graders.types.text_similarity import TextSimilarity

BUILTIN: tuple[registry.GraderType, ...] = (
    StringCheck(),
    TextSimilarity(),
    ScoreModel(),
    LabelModel(),
    Python(),
    Multi(),
    MultipleChoice(),
    Endpoint(),
)
for _grader_type in BUILTIN:
    registry.register(_grader_type)
