"""Reference responses and rejection sampling: only graded-correct text is ever kept."""

from __future__ import annotations

from typing import Any

from trainer.data import Row
from trainer.grading import Grader
from trainer.references import arithmetic_steps, reference_responses, worked_reasoning
from trainer.synthesis import Synthesized, rejection_sample

LIKE = {
    "type": "string_check",
    "name": "g",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.answer }}",
    "operation": "like",
}
EQ = {**LIKE, "operation": "eq"}


def rows(n: int = 3) -> list[Row]:
    return [
        Row(
            index=i,
            messages=[{"role": "user", "content": f"What is {i} + 10?"}],
            item={"answer": str(i + 10)},
        )
        for i in range(n)
    ]


class ScriptedTeacher:
    """Returns queued answers per question, in order, and records how often it was asked."""

    name = "scripted"

    def __init__(self, script: dict[int, list[str]]) -> None:
        self.script = script
        self.asked: list[tuple[int, int]] = []

    def sample(
        self, conversations: list[Any], *, n: int, temperature: float, max_new_tokens: int
    ) -> list[list[str]]:
        out = []
        for conv in conversations:
            i = int(conv[-1]["content"].split()[2])
            self.asked.append((i, n))
            out.append([self.script[i].pop(0) if self.script[i] else "no idea" for _ in range(n)])
        return out


def test_arithmetic_and_option_reasoning() -> None:
    assert arithmetic_steps("What is 12 + 7 * 3?") == "12 + 7 * 3 = 33."
    assert arithmetic_steps("How many moons?") is None
    mc = Row(
        index=0, messages=[{"role": "user", "content": "What is 2 x 3?\nA. 5\nB. 6"}], item={"answer": "B"}
    )
    text = worked_reasoning(mc, "B")
    assert "2 x 3 = 6." in text and "against 6:\nA. 5 vs 6: no\nB. 6 vs 6: yes" in text
    own = Row(
        index=0, messages=[{"role": "user", "content": "Q"}], item={"answer": "x", "explanation": "Because."}
    )
    assert worked_reasoning(own, "x") == "Because."  # the row's own explanation comes first


def test_reference_responses_use_a_form_the_grader_accepts() -> None:
    data = rows()
    with Grader(LIKE) as g:
        out, counts = reference_responses(data, g, grader_spec=g.spec, reference=None)
    assert all(o and "\\boxed{" in o and o.endswith(f"{{{10 + i}}}") for i, o in enumerate(out))
    with Grader(EQ) as g:  # exact match: only the bare answer passes
        out, counts = reference_responses(data, g, grader_spec=g.spec, reference=None)
        assert out == ["10", "11", "12"] and counts["{answer}"] == 3
    python_grader = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n"}
    with Grader(python_grader) as g:  # no declared reference: nothing unless the job says where it is
        out, counts = reference_responses(data, g, grader_spec=g.spec, reference=None)
        assert out == [None, None, None] and counts["no_reference"] == 3


def test_rejection_sampling_keeps_only_graded_correct_traces() -> None:
    data = rows()
    teacher = ScriptedTeacher(
        {
            0: ["I think 9", "It is 10"],  # correct on the 2nd try
            1: ["12?", "13?", "14?", "15?"],  # never correct within the budget
            2: ["Sum: 12", "also 12"],  # first try correct
        }
    )
    results: dict[str, Synthesized] = {}
    rounds: list[int] = []
    with Grader(LIKE) as g:
        rejection_sample(
            data,
            [r.messages for r in data],
            teacher,
            g,
            budget=4,
            temperature=1.0,
            max_new_tokens=16,
            results=results,
            per_round=1,
            on_round=lambda res: rounds.append(len(res)),
        )
    assert (
        results["0"].response == "It is 10" and results["0"].tries == 2 and results["0"].source == "sampled"
    )
    assert results["1"].response is None and results["1"].tries == 4 and results["1"].best_score == 0.0
    assert results["2"].response == "Sum: 12" and results["2"].tries == 1
    # Solved questions are not asked again; the unsolved one is asked until the budget is spent.
    assert sorted(i for i, _ in teacher.asked) == [0, 0, 1, 1, 1, 1, 2]
    assert len(rounds) == 4


def test_rejection_sampling_resumes_from_saved_results() -> None:
    data = rows(2)
    done = {
        "0": Synthesized(uid="0", tries=2, response="10", source="sampled"),
        "1": Synthesized(uid="1", tries=3),
    }
    teacher = ScriptedTeacher({0: [], 1: ["11"]})
    with Grader(LIKE) as g:
        rejection_sample(
            data,
            [r.messages for r in data],
            teacher,
            g,
            budget=4,
            temperature=1.0,
            max_new_tokens=8,
            results=done,
        )
    assert teacher.asked == [(1, 1)]  # only the one try left in the budget
    assert done["1"].response == "11" and done["1"].tries == 4


def test_endpoint_teacher_samples_over_http() -> None:
    import json

    import httpx

    from trainer.config import Endpoint
    from trainer.teachers import EndpointTeacher

    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        assert request.headers["authorization"] == "Bearer k"
        q = body["messages"][-1]["content"]
        # This server ignores n and returns one choice: the teacher tops up with more requests.
        return httpx.Response(
            200, json={"choices": [{"message": {"role": "assistant", "content": f"re: {q}"}}]}
        )

    teacher = EndpointTeacher(
        Endpoint(base_url="http://teacher/v1", model="big", api_key="k"),
        stopper=None,
        transport=httpx.MockTransport(handler),
    )
    out = teacher.sample(
        [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]],
        n=2,
        temperature=0.7,
        max_new_tokens=32,
    )
    assert out == [["re: a", "re: a"], ["re: b", "re: b"]]
    assert {b["model"] for b in bodies} == {"big"} and all(b["max_tokens"] == 32 for b in bodies)
    assert len(bodies) == 4
