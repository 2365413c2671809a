"""Reference responses and rejection sampling: only graded-correct text is ever kept."""

from __future__ import annotations

from collections import Counter
from typing import Any

from trainer.data import Row
from trainer.grading import Grader
from trainer.references import reference_responses, worked_reasoning
from trainer.synthesis import Budget, Synthesized, keep_partial, rejection_sample

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


def sample_all(data: list[Row], teacher: ScriptedTeacher, results: dict[str, Synthesized], **kw: Any) -> None:
    """Rejection sampling of ``data`` with the LIKE grader, a budget of 4 tries and the questions as prompts."""
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
            **kw,
        )


def test_option_and_own_reasoning() -> None:
    mc = Row(
        index=0, messages=[{"role": "user", "content": "What is 2 x 3?\nA. 5\nB. 6"}], item={"answer": "B"}
    )
    text = worked_reasoning(mc, "B")
    assert text is not None and "against 6:\nA. 5 vs 6: no\nB. 6 vs 6: yes" in text
    own = Row(
        index=0, messages=[{"role": "user", "content": "Q"}], item={"answer": "x", "explanation": "Because."}
    )
    assert worked_reasoning(own, "x") == "Because."  # the row's own explanation comes first
    plain = Row(index=0, messages=[{"role": "user", "content": "What is 12 + 7?"}], item={"answer": "19"})
    assert worked_reasoning(plain, "19") is None  # nothing to reason with: no filler sentence


def test_reference_responses_use_a_form_the_grader_accepts() -> None:
    data = rows()
    with Grader(LIKE) as g:  # no instruction: the bare answer is tried first, and "like" accepts it
        refs = reference_responses(data, g, grader_spec=g.spec, reference=None)
    assert refs.responses == ["10", "11", "12"]
    with Grader(LIKE) as g:  # the instruction asks for the paper's boxed answer: that form first
        refs = reference_responses(data, g, grader_spec=g.spec, reference=None, instruction="\\boxed{X}")
    assert all(o and o.endswith(f"\\boxed{{{10 + i}}}") for i, o in enumerate(refs.responses))
    with Grader(EQ) as g:  # exact match: only the bare answer passes
        refs = reference_responses(data, g, grader_spec=g.spec, reference=None, instruction="Answer: X")
    assert refs.responses == ["10", "11", "12"] and refs.by_template["{answer}"] == 3
    assert refs.by_source == {"grader reference '{{ item.answer }}'": 3}


PY_READS_ITEM = {
    "type": "python",
    "name": "p",
    "source": "def grade(sample, item):\n    return float(sample['output_text'].strip() == item['gold'])\n",
}


def test_python_grader_references_come_from_the_fields_it_reads() -> None:
    data = [
        Row(index=i, messages=[{"role": "user", "content": f"Q{i}"}], item={"gold": f"g{i}", "answer": "no"})
        for i in range(3)
    ]
    with Grader(PY_READS_ITEM) as g:
        refs = reference_responses(data, g, grader_spec=g.spec, reference=None)
    assert refs.responses == ["g0", "g1", "g2"]
    assert refs.by_source == {"item.gold": 3} and "item.gold for 3" in refs.summary()


def test_common_answer_fields_and_assistant_replies_are_candidates() -> None:
    exact_answer = {
        "type": "python",
        "name": "p",
        "source": "def grade(sample, item):\n    return float(sample['output_text'] == str(item.get('Target')))\n",
    }
    data = [
        Row(index=0, messages=[{"role": "user", "content": "Q"}], item={"label": "x", "Target": 7}),
        Row(index=1, messages=[{"role": "user", "content": "Q"}], item={}, meta={"assistant_reply": "None"}),
    ]
    with Grader(exact_answer) as g:
        refs = reference_responses(data, g, grader_spec=g.spec, reference=None)
    # Row 0: the numeric field the grader reads, before the common "label"; row 1: its assistant reply.
    assert refs.responses == ["7", "None"]
    assert refs.by_source == {"item.Target": 1, "the trailing assistant message": 1}
    assert "item.label" not in refs.tried  # every row with a label was answered by a more specific source


def test_no_accepted_reference_says_what_was_tried() -> None:
    always_wrong = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 0.0\n"}
    data = rows()
    with Grader(always_wrong) as g:
        refs = reference_responses(data, g, grader_spec=g.spec, reference=None)
        assert refs.responses == [None, None, None]
        assert "item.answer: 0 of 3 accepted" in refs.summary()
        bare = [Row(index=0, messages=[{"role": "user", "content": "Q"}], item={"x": 1})]
        assert (
            "rows has a reference answer: the grader declares no reference"
            in reference_responses(bare, g, grader_spec=g.spec, reference=None).summary()
        )


def test_override_and_bracket_templates_render_like_the_grader() -> None:
    data = rows()
    with Grader(EQ) as g:
        refs = reference_responses(data, g, grader_spec=g.spec, reference='{{ item["answer"] }}')
    assert refs.responses == ["10", "11", "12"]
    assert list(refs.by_source) == ["openrft.reference '{{ item[\"answer\"] }}'"]


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
    sample_all(data, teacher, results, per_round=1, on_round=lambda res: rounds.append(len(res)))
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
    sample_all(data, teacher, done)
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


def test_multiple_choice_rows_keep_their_option_check_before_the_letter() -> None:
    """A 4-option row with the answer letter in item["answer"] and a python grader on the last line (the shape
    of a user's RFT file): the response reasons over the options, then gives the letter."""
    last_line = {
        "type": "python",
        "name": "p",
        "source": "def grade(sample, item):\n"
        "    return float(sample['output_text'].strip().splitlines()[-1] == item['answer'])\n",
    }
    row = Row(index=0, messages=[{"role": "user", "content": "2 x 3?\nA. 5\nB. 6"}], item={"answer": "B"})
    with Grader(last_line) as g:
        refs = reference_responses([row], g, grader_spec=g.spec, reference=None)
    assert refs.responses == ["Checking each option against 6:\nA. 5 vs 6: no\nB. 6 vs 6: yes\n\nB"]
    assert refs.by_source == {"item.answer": 1}


def test_a_first_round_without_one_correct_trace_ends_sampling() -> None:
    data = rows(20)
    teacher = ScriptedTeacher({i: [] for i in range(20)})  # "no idea" to everything
    results: dict[str, Synthesized] = {}
    sample_all(data, teacher, results)
    assert len(teacher.asked) == 20 and all(r.tries == 1 for r in results.values())  # one round, not four


PARTIAL = {
    "type": "python",
    "name": "p",
    "source": "def grade(sample, item):\n"
    "    t = sample['output_text']\n"
    "    return 1.0 if 'yes' in t else 0.5 if 'maybe' in t else 0.0\n",
}


def _grow(data: list[Row], teacher: ScriptedTeacher, budget: Budget) -> dict[str, Synthesized]:
    results: dict[str, Synthesized] = {}
    with Grader(PARTIAL) as g:
        rejection_sample(
            data,
            [r.messages for r in data],
            teacher,
            g,
            budget=[budget] * len(data),
            temperature=1.0,
            max_new_tokens=16,
            results=results,
            min_first_round=1000,
        )
    return results


def test_best_of_k_rounds_grow_with_the_share_unsolved() -> None:
    data = rows(10)
    script = {i: ["yes"] + ["no"] * 20 for i in range(5)}  # half solved at once
    script.update({i: ["no"] * 20 for i in range(5, 10)})
    script[5] = ["no", "no", "no", "yes"] + ["no"] * 20  # solved in the second round
    teacher = ScriptedTeacher(script)
    results = _grow(data, teacher, Budget(8, first=2, grow=True))
    rounds = Counter(n for _, n in teacher.asked)
    # Round 1: 2 tries each; round 2: 5 of 10 unsolved -> 2 x 10 / 5 = 4 tries each; round 3: 4 unsolved ->
    # ceil(2 x 10 / 4) = 5, capped at the 2 left of 8; then the budget is spent.
    assert rounds == {2: 10 + 4, 4: 5}
    assert all(results[str(i)].source == "sampled" for i in range(6))
    assert [results[str(i)].tries for i in range(10)] == [2] * 5 + [6] + [8] * 4


def test_best_of_k_stops_where_rounds_do_not_pay() -> None:
    data = rows(20)
    teacher = ScriptedTeacher({i: (["yes"] if i == 0 else []) + ["no"] * 20 for i in range(20)})
    results = _grow(data, teacher, Budget(16, first=2, grow=True))
    assert len(teacher.asked) == 20  # round 1 solved 1 of 20 (5%): no second round
    assert sum(r.source == "sampled" for r in results.values()) == 1


def test_partial_credit_keeps_a_best_try_above_its_questions_mean() -> None:
    data = rows(3)
    teacher = ScriptedTeacher(
        {
            0: ["no", "maybe", "no", "no"],  # best 0.5 above the mean 0.125: kept as partial
            1: ["maybe"] * 4,  # every try alike: nothing better than its mean
            2: ["no"] * 4,
        }
    )
    results = _grow(data, teacher, Budget(4, first=4, grow=True, partial=True))
    assert keep_partial(results["0"]) and results["0"].best_text == "maybe"
    assert results["0"].mean_score == 0.125
    assert not keep_partial(results["1"]) and not keep_partial(results["2"])


def test_a_class_budget_bounds_best_of_k() -> None:
    data = rows(10)
    script = {i: ["yes"] + ["no"] * 20 for i in range(5)}
    script.update({i: ["no"] * 20 for i in range(5, 10)})
    teacher = ScriptedTeacher(script)
    results = _grow(data, teacher, Budget(16, first=2, grow=True, mean=4))
    # 40 tries in all: round 1 takes 20, round 2 would give the 5 unsolved 4 each (20 more): exactly the budget.
    assert sum(r.tries for r in results.values()) == 40
    assert Counter(n for _, n in teacher.asked) == {2: 10, 4: 5}
