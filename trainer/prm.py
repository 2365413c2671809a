"""Process rewards: score the reasoning steps of a completion (split on blank lines), aggregate them.

The RL reward becomes ``alpha * outcome + (1 - alpha) * process`` (paper: alpha = 0.7, mean over steps).
Three scorers:

- ``self``: the base policy as a generative verifier. For each step prefix it is asked whether the last step
  is correct; the step score is P("Yes") / (P("Yes") + P("No")) from one forward pass (no sampling). The
  adapter is switched off while verifying, so the verifier stays fixed while the policy trains (a verifier
  that trains with the policy could learn to approve its own steps). This is what runs on the CPU default.
- ``hf``: a Hugging Face model with a classification head (``AutoModelForSequenceClassification``: one
  label -> sigmoid, two labels -> P(label 1)) scoring each reasoning prefix; on GPUs a Skywork-o1-Open-PRM
  style model exported with such a head.
- ``endpoint``: an OpenAI-compatible chat model used as step judge: one request per completion returns a
  0-1 score per numbered step.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from trainer.chat_client import ChatClient, ChatError
from trainer.data import content_text

if TYPE_CHECKING:
    from trainer.config import PRMConfig
    from trainer.control import Stopper
    from trainer.stages.context import RunContext


class ProcessReward(Protocol):
    errors: int
    """Completions whose process score could not be computed (they score 0); the RL reward counts them
    with the grader's errors, so the RL watch warns, then fails the job, as it does for grader failures."""
    last_error: str | None

    def score(self, prompts: list[Any], completions: list[str]) -> list[float]:
        """One process score in [0, 1] per completion."""


def split_steps(text: str, separator: str = "\n\n", max_steps: int = 8) -> list[str]:
    """Reasoning steps; beyond ``max_steps`` the tail is merged into the last step (bounded cost)."""
    steps = [s.strip() for s in text.split(separator) if s.strip()]
    if len(steps) > max_steps:
        steps = [*steps[: max_steps - 1], separator.join(steps[max_steps - 1 :])]
    return steps


def aggregate(scores: list[float], how: str) -> float:
    if not scores:
        return 0.0
    if how == "min":
        return min(scores)
    if how == "last":
        return scores[-1]
    return statistics.fmean(scores)


def _question(prompt: Any) -> str:
    """The question a completion answers: the last user turn of a conversational prompt."""
    if isinstance(prompt, list):
        for m in reversed(prompt):
            if m.get("role") == "user":
                return content_text(m.get("content"))
        return ""
    return str(prompt)


VERIFY_INSTRUCTION = (
    "Below is a question and the first steps of a solution. Is the last step correct and useful? "
    "Answer Yes or No."
)


def verifier_messages(question: str, steps: list[str]) -> list[dict[str, str]]:
    body = "\n\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(steps))
    return [
        {"role": "user", "content": f"{VERIFY_INSTRUCTION}\n\nQuestion:\n{question}\n\nSolution:\n{body}"}
    ]


class _PrefixScorer:
    """Shared loop: every (completion, step prefix) pair scored in batches; per-completion aggregation."""

    cfg: PRMConfig
    batch_size: int = 16
    errors: int = 0
    last_error: str | None = None

    def score(self, prompts: list[Any], completions: list[str]) -> list[float]:
        pairs: list[tuple[int, str, list[str]]] = []
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            steps = split_steps(c, self.cfg.step_separator, self.cfg.max_steps)
            for k in range(len(steps)):
                pairs.append((i, _question(p), steps[: k + 1]))
        per: list[list[float]] = [[] for _ in completions]
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            for (i, _, _), s in zip(
                chunk, self._score_prefixes([(q, st) for _, q, st in chunk]), strict=True
            ):
                per[i].append(s)
        return [aggregate(s, self.cfg.aggregate) for s in per]

    def _score_prefixes(self, batch: list[tuple[str, list[str]]]) -> list[float]:
        raise NotImplementedError


class SelfVerifier(_PrefixScorer):
    def __init__(self, model: Any, tokenizer: Any, cfg: PRMConfig, *, stopper: Stopper | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.stopper = stopper
        self.yes, self.no = self._answer_ids(tokenizer)

    @staticmethod
    def _answer_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
        """First tokens of the ways a chat model starts a Yes/No answer."""

        def firsts(words: list[str]) -> list[int]:
            ids = {tokenizer.encode(w, add_special_tokens=False)[0] for w in words}
            return sorted(ids)

        yes, no = firsts(["Yes", " Yes", "yes"]), firsts(["No", " No", "no"])
        return [t for t in yes if t not in no], [t for t in no if t not in yes]

    def _score_prefixes(self, batch: list[tuple[str, list[str]]]) -> list[float]:
        import contextlib

        import torch

        from trainer.generation import chat_prompt

        if self.stopper is not None:
            self.stopper.check(budget=False)
        texts = [chat_prompt(self.tokenizer, verifier_messages(q, steps)) for q, steps in batch]
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            self.tokenizer.padding_side = side
        enc = enc.to(next(self.model.parameters()).device)
        off = (
            self.model.disable_adapter()
            if hasattr(self.model, "disable_adapter")
            else contextlib.nullcontext()
        )
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), off:
                logits = self.model(**enc).logits[:, -1, :].float()
        finally:
            self.model.train(was_training)
        probs = torch.softmax(logits, dim=-1)
        p_yes = probs[:, self.yes].sum(-1)
        p_no = probs[:, self.no].sum(-1)
        return [float(y / (y + n)) if float(y + n) > 0 else 0.5 for y, n in zip(p_yes, p_no, strict=True)]


class HFProcessRewardModel(_PrefixScorer):
    def __init__(self, path: str, cfg: PRMConfig, *, device: str = "cpu") -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.cfg = cfg
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def _score_prefixes(self, batch: list[tuple[str, list[str]]]) -> list[float]:
        import torch

        texts = [f"{q}\n\n" + "\n\n".join(steps) for q, steps in batch]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=4096)
        enc = enc.to(self.model.device)
        with torch.no_grad():
            logits = self.model(**enc).logits.float()
        if logits.shape[-1] == 1:
            return [float(x) for x in torch.sigmoid(logits[:, 0])]
        return [float(x) for x in torch.softmax(logits, dim=-1)[:, 1]]


_STEP_LINE = re.compile(r"step\s*(\d+)\s*[:=-]\s*([01](?:\.\d+)?|\.\d+)", re.I)


class EndpointJudge:
    """An OpenAI-compatible model rates every step of a completion in one request.

    Requests go through the retrying chat client; a completion whose request still fails, or whose reply has
    no step scores, scores 0 and is counted in ``errors`` (with the message in ``last_error``).
    """

    def __init__(
        self,
        cfg: PRMConfig,
        *,
        transport: Any = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self.cfg = cfg
        self.transport = transport
        self.allowed_hosts = allowed_hosts
        self.concurrency = concurrency
        self.timeout = timeout
        self.sleep = sleep
        self.errors = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def _messages(self, question: str, steps: list[str]) -> list[dict[str, str]]:
        body = "\n\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(steps))
        return [
            {
                "role": "user",
                "content": "Rate each step of the solution below for correctness, from 0 (wrong) to 1 (correct). "
                f"Reply with exactly one line per step, formatted 'Step k: score'.\n\nQuestion:\n{question}\n\n"
                f"Solution:\n{body}",
            }
        ]

    def score(self, prompts: list[Any], completions: list[str]) -> list[float]:
        import concurrent.futures

        jobs = [
            (_question(p), split_steps(c, self.cfg.step_separator, self.cfg.max_steps))
            for p, c in zip(prompts, completions, strict=True)
        ]
        assert self.cfg.base_url and self.cfg.model
        with (
            ChatClient.for_user_url(  # the user's judge: public addresses only, no upstream body in errors
                self.cfg.base_url,
                api_key=self.cfg.api_key,
                timeout=self.timeout,
                transport=self.transport,
                sleep=self.sleep,
                allowed_hosts=self.allowed_hosts,
            ) as client,
            concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool,
        ):
            return list(pool.map(lambda j: self._one(client, *j), jobs))

    def _failed(self, message: str) -> float:
        with self._lock:
            self.errors += 1
            self.last_error = message
        return 0.0

    def _one(self, client: ChatClient, question: str, steps: list[str]) -> float:
        if not steps:
            return 0.0
        try:
            data = client.create(
                {
                    "model": self.cfg.model,
                    "messages": self._messages(question, steps),
                    "temperature": 0,
                    "max_tokens": 16 * len(steps) + 16,
                }
            )
        except ChatError as exc:
            return self._failed(f"the process reward endpoint failed: {exc}")
        choices = data.get("choices") or [{}]
        text = str(((choices[0] or {}).get("message") or {}).get("content") or "")
        found = {int(k): min(1.0, max(0.0, float(v))) for k, v in _STEP_LINE.findall(text)}
        scores = [found[k] for k in range(1, len(steps) + 1) if k in found]
        if not scores:
            return self._failed(
                f"the process reward model's reply has no 'Step k: score' lines: {text[:200]!r}"
            )
        return aggregate(scores, self.cfg.aggregate)


def make_process_reward(ctx: RunContext) -> ProcessReward | None:
    """The run's process reward (``openrft.prm``), or None without one."""
    cfg = ctx.options.prm
    if cfg.type == "none":
        return None
    if cfg.type == "self":
        return SelfVerifier(ctx.policy(), ctx.tokenizer, cfg, stopper=ctx.stopper)
    if cfg.type == "hf":
        assert cfg.path
        from trainer.models import resolve_model_dir

        return HFProcessRewardModel(
            resolve_model_dir(cfg.path, cache_dir=ctx.spec.cache_dir),
            cfg,
            device="cuda" if ctx.gpu else "cpu",
        )
    return EndpointJudge(cfg, allowed_hosts=ctx.private_url_hosts)
