"""Judging reasoning traces: extraction, answer equivalence, calculator steps, majority vote and
near-duplicates, on real GSM8K solutions and on hand cases at each rule's edge."""

from __future__ import annotations

import gzip
import itertools
import json
import time
from fractions import Fraction

import pytest

from corpusmix.stages.answers import (
    BadStep,
    check_steps,
    compare_answers,
    extract_answer,
    group_answers,
    judge_problem,
    judge_trace,
    majority_vote,
    near_duplicate_clusters,
    normalize_answer,
    required_agreement,
)

from .conftest import CORPUS

GSM8K = CORPUS / "math" / "math-0000-of-0002.jsonl.gz"

# Five ways of solving one problem, different enough never to count as near-duplicates.
STRATEGIES = [
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May, so she sold 48+24 = <<48+24=72>>72 in total.",
    "Work backwards: April is 48 clips and May is half of that, 24; adding the two months gives the sum.",
    "Let a = 48 be April's sales. Then May's sales are a/2 and the total is 3a/2, which we evaluate now.",
    "Doubling May gives April, so May is 24. Both months together make forty-eight plus twenty-four.",
    "As a table: April 48, May 24 (half of April). The column total is the number of clips sold overall.",
]


def trace(strategy: int, answer: str) -> str:
    return f"{STRATEGIES[strategy]}\n#### {answer}"


@pytest.fixture(scope="module")
def gsm8k() -> list[dict]:
    with gzip.open(GSM8K, "rt") as f:
        return [json.loads(line) for line in itertools.islice(f, 500)]


def test_every_real_solution_passes(gsm8k):
    assert len(gsm8k) == 500
    checked = 0
    for r in gsm8k:
        for text in (r["answer"], r["text"]):
            j = judge_trace(text, r["final_answer"])
            assert j.kept and j.reason is None, (r["id"], j)
            assert j.rule == "gsm8k" and j.steps.bad is None and j.verdict.equal
            assert normalize_answer(j.answer) == r["final_answer"]
        checked += j.steps.checked
    assert checked > 1000  # the solutions' calculator steps were really evaluated


# ---------------------------------------------------------------- extraction

@pytest.mark.parametrize("text, answer, rule", [
    ("step one\n#### 12\nmore\n####  1,080 \n", "1,080", "gsm8k"),
    ("so \\boxed{3} wait, \\boxed{\\frac{3}{4}} is it", "\\frac{3}{4}", "boxed"),
    ("\\boxed{5} and then a cut-off \\boxed{\\frac{1}{2}", "5", "boxed"),
    ("The answer is 17. Checking again, the final ANSWER IS 18.0\nDone", "18.0", "answer_is"),
    ("so the answer is $18.50. Good.", "$18.50", "answer_is"),
    ("Hence the answer is: 18 dollars.", "18 dollars", "answer_is"),
    ("Since 3>2, the answer is therefore 3.", "3", "answer_is"),
    ("the answer is 5\n#### 7", "7", "gsm8k"),  # the first rule that matches wins, not the last position
    ("\\boxed{4}\nThe answer is 9.", "4", "boxed"),
])
def test_extraction_rules(text, answer, rule):
    found = extract_answer(text)
    assert (found.answer, found.rule) == (answer, rule)


def test_caller_pattern_is_tried_first():
    text = "Result: 42\n#### 41"
    found = extract_answer(text, r"Result:\s*(\S+)")
    assert (found.answer, found.rule) == ("42", "pattern")
    assert extract_answer(text, r"Nothing:(\d+)").rule == "gsm8k"


@pytest.mark.parametrize("text", ["no conclusion at all", "####\n", "The answer is.", "\\boxed{}", "\\boxed{7"])
def test_no_answer_found(text):
    assert extract_answer(text) is None
    j = judge_trace(text, "7")
    assert (j.kept, j.reason, j.answer, j.expected) == (False, "no_answer_found", None, "7")


# ---------------------------------------------------------------- equivalence

@pytest.mark.parametrize("answer, reference, method", [
    ("18.0", "18", "numeric"),
    ("18.00", "18", "numeric"),
    ("$18", "18", "numeric"),
    ("\\$18", "18", "numeric"),
    ("18 dollars", "18", "numeric"),
    ("\\text{18 dollars}", "18", "numeric"),
    ("\\boxed{18}", "18", "numeric"),
    ("18.", "18", "numeric"),
    ("x = 18", "18", "numeric"),
    ("= 18", "18", "numeric"),
    ("15 gallons * 8 pints / gallon = <<15*8=120>>120 pints", "120", "numeric"),  # real GSM8K wording
    ("<<5=5>>5", "5", "numeric"),
    ("**18**", "18", "numeric"),
    ("1,000", "1000", "numeric"),
    ("-5", "−5", "numeric"),
    ("90^\\circ", "90", "numeric"),
    ("18%", "18", "numeric"),
    ("18\\%", "18", "numeric"),
    ("3/4", "0.75", "fraction"),
    ("\\frac{3}{4}", "0.75", "fraction"),
    ("\\dfrac34", "3/4", "fraction"),
    ("$-\\frac{1}{2}$", "-0.5", "fraction"),
    (".5", "1/2", "fraction"),
    ("2x+2", "2(x+1)", "symbolic"),
    ("\\sqrt{8}", "2\\sqrt{2}", "symbolic"),
    ("x^{1/2}", "\\sqrt{x}", "symbolic"),
    ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2", "symbolic"),
    ("\\sqrt{2}", "1.4142135623730951", "numeric"),
    ("Tuesday", "tuesday", "string"),
])
def test_equivalent(answer, reference, method):
    v = compare_answers(answer, reference)
    assert (v.equal, v.method) == (True, method), v
    assert compare_answers(reference, answer).equal


@pytest.mark.parametrize("answer, reference", [
    ("18", "19"),
    ("0.75", "3/5"),
    ("18%", "0.18"),  # a percentage is its bare number, never the fraction
    ("0.333333333333", "1/3"),  # fractions compare exactly
    ("18.000001", "18"),
    ("2x+2", "2(x+2)"),
    ("red", "der"),  # words are not products of symbols
    ("18 or 19", "18"),
    ("2x+", "2x"),  # a parse failure is "not equal", not an error
])
def test_not_equivalent(answer, reference):
    assert not compare_answers(answer, reference).equal


def test_tolerance_is_relative_and_tight():
    assert compare_answers("1234567890.1", "1234567890.1000001").equal
    assert not compare_answers("0.0000001", "0.0000002").equal


@pytest.mark.parametrize("hostile", ["9^9^9^9", "(((9^99)^99)^99)^99", "\\sqrt{9^{9^{9}}}", "x" * 300 + "+1",
                                     "__import__('os')", "((((((((((((((((((((1))))))))))))))))))))" * 5])
def test_hostile_answers_are_refused_quickly(hostile):
    t = time.perf_counter()
    assert not compare_answers(hostile, "1").equal
    assert time.perf_counter() - t < 2


# ---------------------------------------------------------------- calculator steps

def test_bad_step_is_found_with_index_and_values():
    text = "Half: <<48/2=24>>24. Total: <<48+24=72>>72. Again: <<48/2=25>>25, then <<1+1=3>>.\n#### 72"
    steps = check_steps(text)
    assert steps.bad == BadStep(3, "48/2", "25", Fraction(24))
    assert (steps.checked, steps.unchecked) == (4, 0)
    j = judge_trace(text, "72")  # the final answer is right, the working is not
    assert (j.kept, j.reason, j.steps.bad.index) == (False, "bad_step", 3)
    assert j.detail == "step 3: 48/2 = 25, computed 24"


@pytest.mark.parametrize("step, ok", [
    ("10/3=3.33", True), ("10/3=3.3", True), ("2/3=0.67", True), ("2/3=0.6667", True), ("1/8=0.125", True),
    ("10/3=3.34", False), ("2/3=0.66", False), ("7/2=3", False),  # an integer claim must be exact
    ("3/4=3/4", True), ("1,000*3=3,000", True), ("2^3=8", True), ("2**10=1024", True), ("-3*-2=6", True),
    ("17//5=3", True), ("17%5=2", True), ("0.1+0.2=0.3", True), ("5*$4=$20", True), ("$10/3=$3.33", True),
])
def test_step_rounding_and_forms(step, ok):
    steps = check_steps(f"<<{step}>>")
    assert steps.checked == 1 and (steps.bad is None) == ok, steps


@pytest.mark.parametrize("step", ["x*2=10", "a=b", "1=2=3", "__import__('os').system('true')=0", "9**9**9=1",
                                  "1/0=1", "2**0.5=1.41", "(1+2=3", "12="])
def test_unparseable_steps_are_unchecked(step):
    t = time.perf_counter()
    steps = check_steps(f"<<{step}>>")
    assert (steps.checked, steps.unchecked, steps.bad) == (0, 1, None)
    assert time.perf_counter() - t < 1


def test_wrong_answer_names_both_answers():
    j = judge_trace(trace(0, "73"), "72")
    assert (j.kept, j.reason, j.answer, j.expected) == (False, "wrong_answer", "73", "72")
    assert j.detail == "'73' != '72' (numeric)"


@pytest.mark.parametrize("final", ["$72", "72.0", "72 clips", "\\boxed{72}"])
def test_equivalent_formats_are_kept(final):
    assert judge_trace(f"{STRATEGIES[0]}\n#### {final}", "72").kept
    assert judge_trace(f"{STRATEGIES[0]}\nThe answer is {final}.", "72").kept


# ---------------------------------------------------------------- majority vote

@pytest.mark.parametrize("wrong", range(6))
@pytest.mark.parametrize("min_agree", [4, 0.8])
def test_vote_of_five_kept_exactly_when_threshold_met(wrong, min_agree):
    answers = ["72"] * (5 - wrong) + [str(100 + k) for k in range(wrong)]  # wrong answers all differ
    texts = [trace(i, a) for i, a in enumerate(answers)]
    judged = judge_problem(texts, min_agree=min_agree, min_traces=5)
    kept = wrong <= 1
    for j, a in zip(judged, answers):
        right = a == "72"
        assert j.kept == (kept and right), (wrong, j)
        assert j.reason == (None if kept and right else "no_majority")
        assert j.expected == ("72" if kept else None)


def test_same_wrong_answer_by_most_traces_wins_the_vote():
    """Without a reference the vote can only measure agreement: it is what the threshold is for."""
    judged = majority_vote(["19", "19", "19", "19", "18"], min_agree=4, min_traces=5)
    assert [j.kept for j in judged] == [True] * 4 + [False]


@pytest.mark.parametrize("min_agree, voters, need", [(4, 5, 4), (0.8, 5, 4), (0.6, 5, 3), (0.5, 4, 2), (1.0, 3, 3),
                                                     (0.01, 5, 1), (1, 9, 1)])
def test_required_agreement(min_agree, voters, need):
    assert required_agreement(min_agree, voters) == need


@pytest.mark.parametrize("bad, error", [(0, ValueError), (0.0, ValueError), (1.5, ValueError), (True, TypeError),
                                        ("4", TypeError)])
def test_required_agreement_refuses(bad, error):
    with pytest.raises(error):
        required_agreement(bad, 5)


def test_equal_answers_in_different_forms_vote_together():
    answers = ["18", "$18.00", "18 dollars", "\\frac{36}{2}", "19", None]
    assert group_answers(answers) == [[0, 1, 2, 3], [4]]
    judged = majority_vote(answers, min_agree=4, min_traces=6)
    assert [j.kept for j in judged] == [True, True, True, True, False, False]
    assert [j.reason for j in judged] == [None] * 4 + ["no_majority", "no_answer_found"]
    assert judged[0].detail == "4 of 6 independent traces agree, 4 needed"


def test_tie_keeps_nobody():
    judged = majority_vote(["18", "18", "19", "19", None], min_agree=2, min_traces=3)
    assert [j.reason for j in judged] == ["no_majority"] * 4 + ["no_answer_found"]
    assert judged[0].detail == "tie between answer groups of 2"


def test_too_few_traces_keeps_nobody():
    judged = majority_vote(["18", "18"], min_agree=2, min_traces=3)
    assert [j.reason for j in judged] == ["no_majority", "no_majority"]


def test_missing_answers_and_bad_steps_count_as_voters_but_vote_for_nothing():
    texts = [trace(0, "72"), trace(1, "72"), trace(2, "72"), STRATEGIES[3],
             STRATEGIES[4].replace("(half", "<<48/2=25>> (half") + "\n#### 72"]
    judged = judge_problem(texts, min_agree=0.8, min_traces=5)  # 3 of 5 < 4
    assert [j.reason for j in judged] == ["no_majority"] * 3 + ["no_answer_found", "bad_step"]
    judged = judge_problem(texts, min_agree=0.6, min_traces=5)  # 3 of 5 >= 3
    assert [j.reason for j in judged] == [None] * 3 + ["no_answer_found", "bad_step"]


# ---------------------------------------------------------------- near-duplicates

def test_near_duplicate_clusters():
    base = trace(0, "72")
    texts = [base, "  " + base.replace(" ", "  \n"), base.replace("so she", "she"), trace(1, "72"), trace(0, "73")]
    assert near_duplicate_clusters(texts) == [[0, 1, 2, 4], [3]]
    assert near_duplicate_clusters(texts, threshold=1.0) == [[0, 1], [2], [3], [4]]
    assert near_duplicate_clusters(["ab", "ab", "abc"]) == [[0, 1], [2]]  # shorter than a shingle


def test_copies_of_a_wrong_trace_vote_once():
    wrong = trace(0, "19")
    texts = [wrong, wrong.replace(" ", "  "), wrong.replace("so she", "she"), trace(1, "72"), trace(2, "72")]
    # Counted per trace, 19 would win 3 to 2; per cluster 72 wins 2 to 1.
    judged = judge_problem(texts, min_agree=2, min_traces=3)
    assert [j.kept for j in judged] == [False, False, False, True, True]
    assert [j.reason for j in judged] == ["no_majority"] * 3 + [None, None]
    assert not any(j.kept for j in judge_problem(texts, min_agree=2, min_traces=3, duplicate_threshold=1.01)[3:])


def test_only_one_copy_of_a_kept_trace_is_kept():
    texts = [trace(0, "72"), trace(0, "72") + "\n", trace(1, "72"), trace(2, "72")]
    judged = judge_problem(texts, min_agree=3, min_traces=3)
    assert [j.reason for j in judged] == [None, "duplicate_trace", None, None]
    assert judged[1].detail == "near-copy of trace 0"
    with_reference = judge_problem(texts + [trace(3, "70")], "72")
    assert [j.reason for j in with_reference] == [None, "duplicate_trace", None, None, "wrong_answer"]


def test_representative_is_the_first_copy_that_passes():
    broken = STRATEGIES[0].replace("<<48/2=24>>", "<<48/2=25>>") + "\n#### 72"
    texts = [broken, trace(0, "72"), trace(1, "72"), trace(2, "72")]
    judged = judge_problem(texts, min_agree=3, min_traces=3)
    assert [j.reason for j in judged] == ["bad_step", None, None, None]


def test_a_near_copy_ending_on_another_answer_is_judged_against_the_winner():
    """A near-copy votes through its representative; when its own last line says something else
    it is wrong, not a duplicate of a correct trace."""
    texts = [trace(0, "72"), trace(0, "72").replace("#### 72", "#### 73"), trace(1, "72"), trace(2, "72")]
    assert near_duplicate_clusters(texts)[0] == [0, 1]
    judged = judge_problem(texts, min_agree=3, min_traces=3)
    assert [j.reason for j in judged] == [None, "wrong_answer", None, None]
    assert judged[1].expected == "72" and "near-copy of trace 0" in judged[1].detail
