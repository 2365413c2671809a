"""``python``: the user's ``grade(sample, item) -> float`` run in a warm sandbox (see trainer.graders.sandbox).

Samples are graded by ``sandbox_workers`` threads; a sandbox failure costs the sample, not the batch.
"""

from __future__ import annotations

import ast
import asyncio
import re
import threading
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from trainer.graders.errors import GraderValidationError, GradingError
from trainer.graders.fields import GraderFields
from trainer.graders.node import Node, Outcome, Runtime, Scope
from trainer.graders.registry import GraderType, ReferenceHints
from trainer.graders.settings import GraderSettings

MAX_PYTHON_SOURCE_BYTES = 256 * 1024
# `item["key"]` / `item.get("key")` in a grader's source: the item fields it reads (reference answers).
_ITEM_KEY = re.compile(r"""item\s*(?:\[\s*|\.get\(\s*)(['"])([^'"\\]+)\1""")


class PythonGrader(GraderFields):
    """``def grade(sample, item) -> float`` run in a sandbox (no network, CPU/memory/time limits)."""

    type: Literal["python"]
    source: str = Field(description="Python source (under 256 kB) defining grade(sample, item).")
    image_tag: str | None = Field(default=None, description="Accepted for compatibility; there is one image.")


class PythonNode(Node):
    def __init__(self, spec: dict[str, Any], settings: GraderSettings) -> None:
        super().__init__(spec)
        self.settings = settings
        self._pool: Any = None
        self._lock = threading.Lock()

    def pool(self, rt: Runtime) -> Any:
        with self._lock:
            if self._pool is None:
                from trainer.graders.sandbox import SandboxPool

                self._pool = SandboxPool(self.spec["source"], self.settings)
                rt.closers.append(self._pool.close)
            return self._pool

    @staticmethod
    def _drain(
        pool: Any, scopes: list[Scope], out: list[Outcome], next_index: Iterator[int], lock: threading.Lock
    ) -> None:
        # One of `sandbox_workers` threads: take the next sample until none is left (no per-sample
        # hand-off between the loop and the pool: the round trip to the jail is the only per-sample cost).
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            try:
                out[i] = Outcome(pool.grade(scopes[i]["sample"], scopes[i].get("item")))
            except GradingError as exc:
                out[i] = Outcome.failed(exc)
            except Exception as exc:  # a bug of ours must cost one sample, not the batch
                out[i] = Outcome.failed(
                    GradingError("python_grader_server_error", f"{type(exc).__name__}: {exc}")
                )

    async def _grade(self, scopes: list[Scope], rt: Runtime, timing: dict[str, float]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        pool = self.pool(rt)
        out = [Outcome() for _ in scopes]
        indexes, lock = iter(range(len(scopes))), threading.Lock()
        workers = min(self.settings.sandbox_workers, len(scopes))
        await asyncio.gather(
            *(
                loop.run_in_executor(rt.sandbox_pool, self._drain, pool, scopes, out, indexes, lock)
                for _ in range(workers)
            )
        )
        return out


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.If | ast.Try):
            # `try: from x import grade` and similar: accept names bound in either branch.
            inner = ast.Module(body=[*node.body, *node.orelse], type_ignores=[])
            names |= _top_level_names(inner)
    return names


class Python(GraderType):
    name = "python"
    order = 50
    schema = PythonGrader

    def check(self, out: dict[str, Any], param: str) -> None:
        source = out["source"]
        if not isinstance(source, str):
            raise GraderValidationError(f"{param}.source", "must be a string")
        size = len(source.encode("utf-8", "surrogatepass"))
        if size > MAX_PYTHON_SOURCE_BYTES:
            raise GraderValidationError(f"{param}.source", f"is {size} bytes; the limit is 256 kB")
        try:
            # Parsing never executes anything; pathological nesting raises RecursionError/MemoryError.
            tree = ast.parse(source)
        except SyntaxError as exc:
            raise GraderValidationError(
                f"{param}.source", f"syntax error at line {exc.lineno}: {exc.msg}"
            ) from None
        except (RecursionError, MemoryError, ValueError) as exc:
            raise GraderValidationError(
                f"{param}.source", f"cannot be parsed: {type(exc).__name__}"
            ) from None
        if "grade" not in _top_level_names(tree):
            raise GraderValidationError(f"{param}.source", "must define a function grade(sample, item)")
        if out.get("image_tag") is not None and not isinstance(out["image_tag"], str):
            raise GraderValidationError(f"{param}.image_tag", "must be a string")

    def node(self, spec: dict[str, Any], settings: GraderSettings) -> Node:
        return PythonNode(spec, settings)

    def reference_hints(self, spec: dict[str, Any]) -> ReferenceHints:
        return ReferenceHints(item_fields=tuple(m.group(2) for m in _ITEM_KEY.finditer(spec["source"])))


GRADER_TYPE = Python()
