"""string_check, text_similarity and multiple_choice against hand-computed expectations."""

from __future__ import annotations

from typing import Any

import pytest

from trainer.graders import GraderEngine, GraderSettings, run_grader


def grade(
    spec: dict[str, Any], pairs: list[tuple[str, Any]], settings: GraderSettings | None = None
) -> list[float]:
    with GraderEngine(spec, settings or GraderSettings()) as engine:
        result = engine.grade_batch([s for s, _ in pairs], [i for _, i in pairs])
    assert not any(result.sample_errors), result.error_details
    return result.scores


def string_check(op: str) -> dict[str, Any]:
    return {
        "type": "string_check",
        "name": "s",
        "input": "{{sample.output_text}}",
        "reference": "{{item.label}}",
        "operation": op,
    }


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("eq", [1.0, 0.0, 0.0, 0.0]),
        ("ne", [0.0, 1.0, 1.0, 1.0]),
        ("neq", [0.0, 1.0, 1.0, 1.0]),
        ("like", [1.0, 0.0, 1.0, 0.0]),  # reference contained in input, case-sensitive
        ("ilike", [1.0, 1.0, 1.0, 0.0]),  # case-insensitive containment
    ],
)
def test_string_check_operations(op: str, expected: list[float]) -> None:
    pairs = [
        ("Paris", {"label": "Paris"}),
        ("PARIS", {"label": "Paris"}),
        ("It is Paris.", {"label": "Paris"}),
        ("Lyon", {"label": "Paris"}),
    ]
    assert grade(string_check(op), pairs) == expected


def test_string_check_openai_example_via_run() -> None:
    # The graders guide's example: exact match of the output against item.label.
    out = run_grader(string_check("eq"), "positive", {"label": "positive"}, GraderSettings())
    assert out["reward"] == 1.0 and out["metadata"]["type"] == "string_check"
    out = run_grader(string_check("eq"), "negative", {"label": "positive"}, GraderSettings())
    assert out["reward"] == 0.0 and not any(v for v in out["metadata"]["errors"].values())


def test_string_check_missing_variable_scores_zero_with_error() -> None:
    with GraderEngine(string_check("eq")) as engine:
        result = engine.grade_batch(["Paris", "Paris"], [{"label": "Paris"}, {"other": 1}])
    assert result.scores == [1.0, 0.0]
    assert result.errors["invalid_variable_error"] == 1
    assert result.sample_errors == [[], ["invalid_variable_error"]]
    assert "item.label" in result.error_details[0]


def similarity(metric: str) -> dict[str, Any]:
    return {
        "type": "text_similarity",
        "name": metric,
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.reference_answer }}",
        "evaluation_metric": metric,
        "pass_threshold": 0.5,
    }


CAT = ("the cat is on the mat", {"reference_answer": "the cat sat on the mat"})
SAME = ("the cat sat on the mat", {"reference_answer": "the cat sat on the mat"})
DISJOINT = ("dogs bark loudly", {"reference_answer": "the cat sat on the mat"})


@pytest.mark.parametrize(
    ("metric", "cat"),
    [
        # 5 of 6 unigrams shared: P = R = F = 5/6
        ("rouge_1", 5 / 6),
        # bigrams: the-cat, on-the, the-mat shared of 5 each: 3/5
        ("rouge_2", 3 / 5),
        # trigrams: on-the-mat only, of 4 each: 1/4
        ("rouge_3", 1 / 4),
        ("rouge_4", 0.0),
        ("rouge_5", 0.0),
        # LCS "the cat on the mat" = 5 tokens of 6
        ("rouge_l", 5 / 6),
        # GLEU: min(P, R) over 1-4-grams: matches 5+3+1+0 = 9 of 6+5+4+3 = 18 → 0.5
        ("gleu", 0.5),
        # sacrebleu sentence BLEU: precisions 5/6, 3/5, 1/4 and 0/3 for 4-grams, which sacrebleu's default
        # "exp" smoothing turns into 1 / (2 * 3); brevity penalty 1 (equal lengths)
        ("bleu", (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25),
    ],
)
def test_ngram_metrics(metric: str, cat: float) -> None:
    scores = grade(similarity(metric), [CAT, SAME, DISJOINT])
    assert scores[0] == pytest.approx(cat, abs=1e-6)
    assert scores[1] == pytest.approx(1.0)
    assert scores[2] == pytest.approx(0.0)


def test_fuzzy_match_is_rapidfuzz_wratio_like_openais_python_example() -> None:
    from rapidfuzz import fuzz, utils

    pairs = [CAT, SAME, DISJOINT, ("The capital is PARIS", {"reference_answer": "paris"})]
    expected = [
        fuzz.WRatio(s, i["reference_answer"], processor=utils.default_process) / 100 for s, i in pairs
    ]
    assert grade(similarity("fuzzy_match"), pairs) == pytest.approx(expected)
    assert expected[3] == pytest.approx(0.9)  # partial match of a short reference: WRatio's 0.9 scaling
    assert expected[1] == 1.0


def test_meteor_with_offline_wordnet() -> None:
    # NLTK's documented example (exact, stem and WordNet-synonym matches): 0.6944, with WordNet read from
    # the local database, nothing downloaded.
    hyp = "It is a guide to action which ensures that the military always obeys the commands of the party"
    ref = "It is a guide to action that ensures that the military will forever heed Party commands"
    scores = grade(similarity("meteor"), [(hyp, {"reference_answer": ref}), SAME])
    assert scores[0] == pytest.approx(0.6944, abs=1e-4)
    assert scores[1] == pytest.approx(0.9977, abs=1e-3)  # METEOR's fragmentation penalty keeps it below 1


def test_meteor_uses_synonyms() -> None:
    from trainer.graders.similarity import make_meteor
    from trainer.graders.wordnet import NoSynonyms, load_wordnet

    hyp, ref = ["the kitten sat on the rug"], ["the cat sat on the carpet"]
    with_wordnet = make_meteor(load_wordnet())(hyp, ref)[0]
    without = make_meteor(NoSynonyms())(hyp, ref)[0]
    assert with_wordnet > without  # rug ~ carpet is a WordNet synonym pair


def test_meteor_without_wordnet_fails_loudly_unless_allowed(tmp_path: Any) -> None:
    missing = GraderSettings(wordnet_dir=str(tmp_path))
    with GraderEngine(similarity("meteor"), missing) as engine:
        result = engine.grade_batch([SAME[0]], [SAME[1]])
    assert result.scores == [0.0] and result.errors["other_error"] == 1
    assert "wordnet-base" in result.error_details[0]
    allowed = GraderSettings(wordnet_dir=str(tmp_path), meteor_without_wordnet=True)
    assert grade(similarity("meteor"), [SAME], allowed)[0] > 0.99


def test_cosine_with_bundled_minilm() -> None:
    pairs = [
        ("The weather is lovely today.", {"reference_answer": "It is a beautiful sunny day."}),
        ("The weather is lovely today.", {"reference_answer": "Quarterly revenue fell by ten percent."}),
        ("identical text", {"reference_answer": "identical text"}),
    ]
    related, unrelated, same = grade(similarity("cosine"), pairs)
    assert same == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= unrelated < related < 1.0
    assert related > 0.4 and unrelated < 0.3


def test_cosine_without_a_model_is_an_error() -> None:
    with GraderEngine(similarity("cosine"), GraderSettings(cosine_model_path=None)) as engine:
        result = engine.grade_batch([SAME[0]], [SAME[1]])
    assert result.scores == [0.0] and result.errors["other_error"] == 1


MC = {"type": "multiple_choice", "name": "mc"}


def test_multiple_choice_formats() -> None:
    item = {"answer": "B"}
    pairs = [
        (r"Reasoning... so the answer is \boxed{B}.", item),
        (r"\boxed{\text{B}}", item),
        ("The correct answer is: B", item),
        ("Answer: (B)", item),
        ("I first thought A, but the final answer is **B**.", item),
        ("Option A fails because...\nB", item),
        ("<think>A or B</think><answer>B</answer>", item),
        ("The correct answer is: C", item),
        (r"\boxed{A}", {"answer": "(a)"}),  # references are normalized too
        (r"\boxed{D. Paris}", {"answer": "D. Paris"}),
    ]
    assert grade(MC, pairs) == [1, 1, 1, 1, 1, 1, 1, 0, 1, 1]


def test_multiple_choice_parse_errors_are_reported() -> None:
    with GraderEngine(MC) as engine:
        result = engine.grade_batch(
            ["I am not sure.", "Answer: B", "Answer: B"], [{"answer": "B"}, {"answer": "???"}, {}]
        )
    assert result.scores == [0.0, 0.0, 0.0]
    assert result.sample_errors == [
        ["sample_parse_error"],
        ["invalid_variable_error"],
        ["invalid_variable_error"],
    ]


def test_multiple_choice_custom_reference_and_labels() -> None:
    spec = {"type": "multiple_choice", "reference": "{{ item.gold.letter }}", "labels": ["1", "2", "3"]}
    assert grade(
        spec, [("Answer: 2", {"gold": {"letter": "2"}}), ("Answer: 3", {"gold": {"letter": "2"}})]
    ) == [1, 0]
