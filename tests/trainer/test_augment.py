"""Augmentation: paraphrase filtering, deterministic option shuffles that keep the answer correct."""

from __future__ import annotations

from trainer.augment import augment_row, keeps_meaning, parse_variants
from trainer.data import Row, parse_choices, question
from trainer.graders import GraderEngine, validate_grader

MC_TEXT = "Which gas do plants take in for photosynthesis?\nA. Oxygen\nB. Carbon dioxide\nC. Helium\nD. Neon"


def mc_row(index: int = 0, answer: str = "B") -> Row:
    return Row(
        index=index,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": MC_TEXT}],
        item={"answer": answer, "domain": "biology"},
        meta={"split": "train"},
    )


def option_text(row: Row, label: str) -> str:
    ch = parse_choices(question(row))
    assert ch is not None
    return ch.texts[ch.labels.index(label)]


def test_paraphrase_checks_keep_numbers_and_reject_answers() -> None:
    orig = "A train travels 60 km in 2 hours. What is its speed?"
    assert keeps_meaning(orig, "What is the speed of a train that covers 60 km in 2 hours?")
    assert not keeps_meaning(orig, "A train travels 50 km in 2 hours. What is its speed?")  # number changed
    assert not keeps_meaning(orig, "What is the speed of a train covering 60 km in 2 hours and 5 minutes?")
    assert not keeps_meaning(orig, orig.upper())  # not a paraphrase
    assert not keeps_meaning(orig, "The answer is 30 km per hour for 60 km in 2 hours.")
    reply = (
        "1. What speed does a train have if it goes 60 km in 2 hours? <sep> Version 2: A train covers 60 km "
        "in 2 hours; how fast is it? <sep> It goes 61 km in 2 hours. <sep> "
    )
    got = parse_variants(reply, orig, 5)
    assert got == [
        "What speed does a train have if it goes 60 km in 2 hours?",
        "A train covers 60 km in 2 hours; how fast is it?",
    ]


def test_option_shuffle_relabels_answer_deterministically() -> None:
    row = mc_row()
    a = augment_row(row, [], n_variants=5, shuffle=True, seed=1, first_index=10)
    b = augment_row(row, [], n_variants=5, shuffle=True, seed=1, first_index=10)
    assert [r.messages for r in a] == [r.messages for r in b]  # same seed, same shuffles
    assert 1 <= len(a) <= 5  # an identity permutation adds nothing and is skipped
    for r in a:
        assert option_text(r, r.item["answer"]) == "Carbon dioxide"
        assert r.item["domain"] == "biology" and r.source_index == 0 and r.uid.startswith("0.")
        assert r.messages[0] == row.messages[0]  # the system message is untouched
    c = augment_row(row, [], n_variants=5, shuffle=True, seed=2, first_index=10)
    assert [r.messages for r in c] != [r.messages for r in a]


def test_augmented_rows_are_graded_correct_by_the_real_grader() -> None:
    spec = validate_grader({"type": "multiple_choice", "name": "mc"})
    row = mc_row()
    variants = [
        "Plants absorb which gas during photosynthesis?",
        "During photosynthesis, which gas is taken in?",
    ]
    rows = augment_row(row, variants, n_variants=4, shuffle=True, seed=3, first_index=1)
    assert any("Plants absorb which gas" in question(r) for r in rows)
    answers = [f"The correct answer is: \\boxed{{{r.item['answer']}}}" for r in rows]
    with GraderEngine(spec) as engine:
        res = engine.grade_batch(answers, [r.item for r in rows])
        assert res.scores == [1.0] * len(rows)
        # The original letter is now wrong wherever the shuffle moved the answer.
        stale = [r for r in rows if r.item["answer"] != "B"]
        if stale:
            res = engine.grade_batch(["\\boxed{B}"] * len(stale), [r.item for r in stale])
            assert res.scores == [0.0] * len(stale)


def test_structured_choices_follow_the_shuffle() -> None:
    row = mc_row()
    row.item["choices"] = {
        "text": ["Oxygen", "Carbon dioxide", "Helium", "Neon"],
        "label": ["A", "B", "C", "D"],
    }
    for r in augment_row(row, [], n_variants=4, shuffle=True, seed=5, first_index=1):
        idx = ["A", "B", "C", "D"].index(r.item["answer"])
        assert r.item["choices"]["text"][idx] == "Carbon dioxide"


def test_open_questions_need_a_paraphrase() -> None:
    row = Row(index=0, messages=[{"role": "user", "content": "What is 3 + 4?"}], item={"answer": "7"})
    assert augment_row(row, [], n_variants=3, shuffle=True, seed=1, first_index=1) == []
    rows = augment_row(row, ["Compute 3 + 4."], n_variants=3, shuffle=True, seed=1, first_index=1)
    assert [question(r) for r in rows] == ["Compute 3 + 4."] and rows[0].item == {"answer": "7"}
