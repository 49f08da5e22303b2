"""Judging synthetic reasoning traces: which of a teacher model's traces may enter the mix.

A teacher writes several traces per seed problem and, unvalidated, 30-40% of them are wrong.
A trace is kept only when its final answer can be found, every calculator step it shows is
right, and its answer matches the problem's reference answer or, where there is none, the
answer most of the problem's independent traces reached. Everything here is pure (text in,
verdict out) so that a stage can run it per problem and record each rejection's reason.

Rules this module commits to (the tests pin each one):

* **Extraction** tries, in order: the caller's regex (one capture group, its last match), the
  last GSM8K ``#### N`` line, the last ``\\boxed{...}`` with balanced braces, the last "the
  (final) answer is ..." up to the end of its sentence or line (a "therefore", "thus", ... right
  after "is" is skipped). The first rule that matches wins, not the latest position in the
  text: a trace that ends ``#### 18`` is judged on 18 even if a ``\\boxed`` appears elsewhere.
* **Percentages**: ``%`` (and ``\\%``, "percent") is a unit and is dropped: ``18%`` equals
  ``18`` and does *not* equal ``0.18``. GSM8K and MATH write percentage answers as the bare
  percent number, and accepting both readings would let ``0.18`` pass for a reference of 18.
* **Units and currency** are dropped: ``$18``, ``18 dollars``, ``18.00`` all equal ``18``; a
  unit is the run of words after a number and a space (``2x`` keeps its ``x``). An answer
  with ``=`` is read from its last ``=`` on (``x = 18``, ``15 * 8 = <<15*8=120>>120 pints``).
* **Numbers**: plain numbers compare with a relative tolerance of 1e-9 (``numeric``); when
  either side is written as a fraction the comparison is exact (``fraction``), so
  ``0.333333333333`` does not equal ``1/3`` while ``0.75`` equals ``\\frac{3}{4}``.
* **Expressions** that are not plain numbers and differ as text go to sympy (``symbolic``):
  ``simplify(a - b) == 0``, or, for two constants, the numeric tolerance. Sympy only sees
  inputs of at most ``MAX_EXPR_CHARS`` characters made of numbers, operators, ``sqrt``, ``pi``
  and words of at most three letters (each letter a symbol), where at least one side holds a
  digit or an operator, and none whose numbers could grow past ``MAX_DIGITS`` digits
  (``9^9^9``): it is the one slow part, and prose is not algebra ("red" is not "der"). Any
  failure there means "not equal", never an exception.
* **Calculator steps** ``<<48/2=24>>`` are evaluated exactly (rationals, no ``eval``); a claim
  with decimals may be the value rounded to those decimals (``<<10/3=3.33>>``), an integer
  claim must be exact (``<<7/2=3>>`` is a wrong step, the error teachers make). ``^`` means
  power. A step that does not parse (variables, words) is counted as unchecked.
* **Majority vote** (no reference): near-duplicate traces (character 5-gram Jaccard >= 0.9
  after whitespace normalisation) form one cluster, which votes once, through its
  representative: its first member that passes the trace checks. ``min_agree`` is a count
  (an ``int``, e.g. 4) or a fraction of the independent traces (a ``float`` in (0, 1], e.g.
  0.8 -> ceil(0.8 n)); the independent traces are the clusters, including those that found no
  answer or failed a step (they vote for nothing). The largest answer group is kept when it
  reaches the threshold, the problem has ``min_traces`` clusters and no other group is as
  large; every other answer is ``no_majority``.
* **Duplicates**: only a cluster's representative can be kept. A member that fails its own
  checks keeps its own reason; one that passes is ``duplicate_trace`` when the representative
  is kept and otherwise shares the representative's reason. Under a vote, a member whose own
  answer differs from the winning one is ``wrong_answer`` (a near-copy can change only its last
  line), so every ``duplicate_trace`` is a correct trace. This holds with a reference too:
  a near-copy adds nothing to a mix.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Literal

Rule = Literal["pattern", "gsm8k", "boxed", "answer_is"]
Reason = Literal["no_answer_found", "wrong_answer", "bad_step", "no_majority", "duplicate_trace"]
Method = Literal["numeric", "fraction", "symbolic", "string"]

REL_TOL = Fraction(1, 10**9)
MAX_EXPR_CHARS = 200  # sympy's time budget: longer answers are compared as strings
MAX_DIGITS = 10_000  # no number, in a calculator step or in sympy, may grow past this
MAX_WORD_LETTERS = 3  # longer letter runs are words, not products of symbols

# ---------------------------------------------------------------- extraction

_GSM8K = re.compile(r"^[ \t]*####[ \t]*(.+?)[ \t]*$", re.M)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(r"\banswer\s+is\b(?:\s+(?:therefore|thus|hence|then|so|simply|just)\b)?[\s:]*"
                        r"(.+?)[ \t]*(?:\.(?=\s|$)|[!?;]|$)", re.I | re.M)
_HAS_ALNUM = re.compile(r"[0-9A-Za-z]")


@dataclass(frozen=True)
class Extracted:
    """A trace's final answer as written, and the rule that found it (recorded with rejections)."""

    answer: str
    rule: Rule


def _braced(text: str, open_at: int) -> tuple[str, int] | None:
    """The content of the brace group opening at ``open_at`` and the index after it; None when the
    braces never balance (a truncated trace), so a cut-off ``\\boxed{`` is not read as an answer."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1:i], i + 1
    return None


def _last_group(regex: re.Pattern[str], text: str) -> str | None:
    """The last match's first group that holds a letter or digit: "the answer is." answers nothing."""
    found = [m.group(1).strip() for m in regex.finditer(text)]
    return next((f for f in reversed(found) if _HAS_ALNUM.search(f)), None)


def _last_boxed(text: str) -> str | None:
    """The last balanced ``\\boxed{...}``: nested braces (``\\boxed{\\frac{3}{4}}``) stay inside."""
    for m in reversed(list(_BOXED.finditer(text))):
        group = _braced(text, m.end() - 1)
        if group is not None and group[0].strip():
            return group[0].strip()
    return None


def extract_answer(text: str, pattern: str | re.Pattern[str] | None = None) -> Extracted | None:
    """The trace's final answer by the first rule that finds one (module docstring), None when
    none does: a trace that never commits to an answer cannot be checked, so it is rejected."""
    rules: list[tuple[Rule, Callable[[str], str | None]]] = [
        ("gsm8k", lambda t: _last_group(_GSM8K, t)),
        ("boxed", _last_boxed),
        ("answer_is", lambda t: _last_group(_ANSWER_IS, t)),
    ]
    if pattern is not None:
        regex = re.compile(pattern)
        rules.insert(0, ("pattern", lambda t: _last_group(regex, t)))
    for rule, find in rules:
        answer = find(text)
        if answer is not None:
            return Extracted(answer, rule)
    return None


# ------------------------------------------------------------- normalisation

_UNWRAP = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|boxed|fbox)\s*\{")
_DROP = re.compile(r"\\[,!;: ]|\\(?:left|right|displaystyle|degree)\b|\^\s*\{?\s*\\circ\s*\}?|\\circ|\\?[%$°£€¥~]"
                   r"|\bpercent\b")
_ASSIGNMENT = re.compile(r"^.*=")
_ANNOTATION = re.compile(r"<<([^<>]*)>>")
_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,])")
_UNIT_TAIL = re.compile(r"^([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s+[A-Za-z][A-Za-z\s.'/-]*$")


def _drop_thousands(text: str) -> str:
    """``1,000`` -> ``1000``; a comma not between groups of three digits (``1,5``) is left alone."""
    return _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)


def _unwrap_commands(text: str) -> str:
    """``\\text{ dollars}`` -> `` dollars ``: the wrapper is markup, its content is the answer;
    padding with spaces keeps ``5\\text{cm}`` a number and a unit."""
    while (m := _UNWRAP.search(text)) is not None:
        group = _braced(text, m.end() - 1)
        if group is None:
            return text[:m.start()] + text[m.end():]
        text = f"{text[:m.start()]} {group[0]} {text[group[1]:]}"
    return text


def _trim(text: str) -> str:
    """Sentence punctuation and markdown emphasis around an answer; a leading point stays (.5)."""
    return text.strip().lstrip("*`:").rstrip(" \t\n.,;:!?*`").strip()


def normalize_answer(raw: str) -> str:
    """The answer stripped of everything that does not change its value (markup, currency,
    percent, degrees, units, thousands separators, calculator annotations, edge punctuation)
    and of everything up to its last ``=`` (``x = 18``; ``15 * 8 = 120 pints``: an answer
    written as a calculation ends in its result), so that the comparison only has to tell
    numbers and expressions apart."""
    text = _ANNOTATION.sub(" ", raw).replace("−", "-")
    text = _unwrap_commands(text.replace("\\(", "").replace("\\)", "").replace("\\[", "").replace("\\]", ""))
    text = _trim(_ASSIGNMENT.sub("", _trim(_DROP.sub(" ", text))))
    text = " ".join(_drop_thousands(text).split())
    unit = _UNIT_TAIL.match(text)
    return unit.group(1) if unit else text


# --------------------------------------------------------- exact arithmetic

_BINARY: dict[type, Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: lambda a, b: Fraction(a // b), ast.Mod: operator.mod,
}


def _power(base: Fraction, exponent: Fraction) -> Fraction | None:
    """An exact power, refused when not an integer power or when the result would pass
    ``MAX_DIGITS`` digits: a step like ``<<9**9**9=1>>`` must not hang the judge."""
    if exponent.denominator != 1:
        return None
    bits = max(abs(base.numerator), base.denominator).bit_length() * abs(exponent.numerator)
    if bits > MAX_DIGITS * math.log2(10):
        return None
    return base ** int(exponent)


def _evaluate(node: ast.AST, source: str) -> Fraction | None:
    """A parsed arithmetic expression's exact value; None for anything but numbers, + - * / // %
    **, parentheses and signs. Literals are read from the source text so 0.1 is exactly 1/10."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, source)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(ast.get_source_segment(source, node) or "")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand, source)
        return None if value is None else (-value if isinstance(node.op, ast.USub) else value)
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, source), _evaluate(node.right, source)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Pow):
            return _power(left, right)
        if type(node.op) in _BINARY:
            return _BINARY[type(node.op)](left, right)
    return None


def arithmetic_value(expression: str) -> Fraction | None:
    """The exact value of an arithmetic expression (``48/2``, ``1,000*3``, ``2^3``), None when it
    is not one; parse failures of every kind are "not a number", never an error."""
    source = _drop_thousands(expression).replace("^", "**").strip()
    if not source or len(source) > MAX_EXPR_CHARS:
        return None
    try:
        return _evaluate(ast.parse(source, mode="eval"), source)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, MemoryError, OverflowError):
        return None


def close(a: Fraction, b: Fraction) -> bool:
    """Equal within ``REL_TOL`` of the larger magnitude: decimals written to many places may
    differ in the last digit without being different answers."""
    return a == b or abs(a - b) <= REL_TOL * max(abs(a), abs(b))


# ------------------------------------------------------------------ LaTeX

_FRAC = re.compile(r"\\[dt]?frac\s*")
_SQRT = re.compile(r"\\sqrt\s*")
_NTH_ROOT = re.compile(r"\\sqrt\s*\[([^\]]*)\]")
_ROOT = re.compile(r"\\nthroot")
_SIMPLE = {"\\cdot": "*", "\\times": "*", "\\div": "/", "\\pi": " pi ", "×": "*", "÷": "/", "·": "*"}
_MACROS: tuple[tuple[re.Pattern[str], int, Callable[..., str]], ...] = (
    (_FRAC, 2, lambda a, b: f"(({a})/({b}))"),
    (_ROOT, 2, lambda n, x: f"(({x})**(1/({n})))"),
    (_SQRT, 1, lambda x: f"sqrt(({x}))"),
)


def _argument(text: str, at: int) -> tuple[str, int] | None:
    """A LaTeX macro argument: a brace group or a single character (``\\frac34``)."""
    while at < len(text) and text[at] == " ":
        at += 1
    if at >= len(text):
        return None
    return _braced(text, at) if text[at] == "{" else (text[at], at + 1)


def _rewrite_macro(text: str, macro: re.Pattern[str], arity: int, form: Callable[..., str]) -> str | None:
    """Every use of a macro replaced by ``form(arguments)``, nested uses included; None when an
    argument is missing (malformed LaTeX then compares as a string)."""
    while (m := macro.search(text)) is not None:
        args, at = [], m.end()
        for _ in range(arity):
            arg = _argument(text, at)
            if arg is None:
                return None
            args.append(arg[0])
            at = arg[1]
        text = text[:m.start()] + form(*args) + text[at:]
    return text


def latex_to_plain(text: str) -> str | None:
    """The light LaTeX-to-Python rewrite both number parsing and sympy read (\\frac, \\sqrt,
    ^, \\cdot, \\times, braces); sympy's own LaTeX parser needs antlr, which we do not ship.
    None when LaTeX is left that we do not know: such answers compare as strings."""
    for latex, plain in _SIMPLE.items():
        text = text.replace(latex, plain)
    text = _NTH_ROOT.sub(r"\\nthroot{\1}", text)
    for macro, arity, form in _MACROS:
        rewritten = _rewrite_macro(text, macro, arity, form)
        if rewritten is None:
            return None
        text = rewritten
    if "\\" in text:
        return None
    return text.replace("{", "(").replace("}", ")").replace("^", "**")


# ------------------------------------------------------------------- sympy

_ALGEBRA = re.compile(r"[0-9A-Za-z+\-*/().\s]+")
_LETTERS = re.compile(r"[A-Za-z]+")
_MATH_SIGN = re.compile(r"[0-9+\-*/]")
_FUNCTIONS = ("sqrt", "pi")


def _spell_out(plain: str) -> str | None:
    """Letters as separate symbols (``xy`` -> ``x y``, so no Python keyword such as ``or`` can
    reach sympy's parser); None for words, which are prose, not algebra."""
    def letters(m: re.Match[str]) -> str:
        word = m.group(0)
        return f" {word} " if word in _FUNCTIONS else " " + " ".join(word) + " "

    words = _LETTERS.findall(plain)
    if any(len(w) > MAX_WORD_LETTERS and w not in _FUNCTIONS for w in words):
        return None
    return _LETTERS.sub(letters, plain)


def _digits_bound(expr) -> float:
    """An upper bound on the digits of any number evaluating ``expr`` can produce, so that
    towers (``9^9^9``) are refused before sympy tries to compute them."""
    if expr.is_Rational:
        return float(max(len(str(abs(expr.p))), len(str(expr.q))))
    if expr.is_Pow and not expr.args[1].free_symbols:
        base, exponent = expr.args
        if exponent.is_Rational:
            return _digits_bound(base) * max(1.0, float(abs(exponent)))
        digits = _digits_bound(exponent)  # an unevaluated exponent (a tower's) is below 10**digits
        return _digits_bound(base) * 10.0**digits if digits <= 2 else math.inf
    parts = [_digits_bound(a) for a in expr.args]
    if not parts:  # a symbol or a constant such as pi
        return 1.0
    return max(parts) + len(parts) if expr.is_Add else sum(parts)


def _sympy_expr(text: str):
    """``text`` as a sympy expression, or None when it is not algebra sympy may safely read."""
    plain = latex_to_plain(text)
    if plain is None or len(plain) > MAX_EXPR_CHARS or not _ALGEBRA.fullmatch(plain):
        return None
    spelled = _spell_out(plain)
    if spelled is None:
        return None
    import sympy  # half a second to import: only answers that are not plain numbers pay it
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    names = {c: sympy.Symbol(c) for c in set(_LETTERS.findall(spelled)) if c not in _FUNCTIONS}
    names.update(sqrt=sympy.sqrt, pi=sympy.pi)
    transformations = standard_transformations + (implicit_multiplication_application, convert_xor)
    try:
        if _digits_bound(parse_expr(spelled, local_dict=dict(names), transformations=transformations,
                                    evaluate=False)) > MAX_DIGITS:
            return None
        expr = parse_expr(spelled, local_dict=dict(names), transformations=transformations)
    except Exception:  # sympy's parser raises many kinds; any of them means "not an expression"
        return None
    return expr if isinstance(expr, sympy.Expr) else None


def _sympy_equal(a, b) -> tuple[bool, Method]:
    """Symbolic equality, or numeric within tolerance for two constants (``\\sqrt{2}`` against
    a decimal), which ``simplify`` cannot see."""
    import sympy

    try:
        if a == b or sympy.simplify(a - b) == 0:
            return True, "symbolic"
        if not (a.free_symbols or b.free_symbols):
            x, y = (Fraction(str(v.evalf(30))) for v in (a, b))
            return close(x, y), "numeric"
    except Exception:  # complex values, undefined operations: not equal
        pass
    return False, "symbolic"


# ------------------------------------------------------------- comparison

@dataclass(frozen=True)
class Verdict:
    """Whether two answers are the same, how that was decided, and the normalised forms
    compared (what a reviewer of a rejection needs to see)."""

    equal: bool
    method: Method
    answer: str
    reference: str


def _number(normalised: str) -> tuple[Fraction, bool] | None:
    """A plain number's exact value and whether it was written as a fraction; None otherwise."""
    plain = latex_to_plain(normalised)
    if plain is None or _LETTERS.search(plain):
        return None
    value = arithmetic_value(plain)
    return None if value is None else (value, "/" in plain)


def compare_answers(answer: str, reference: str) -> Verdict:
    """Are ``answer`` and ``reference`` the same answer? Numbers first (exact or within
    tolerance), then identical text, then sympy: each step is cheaper than the next."""
    a, b = normalize_answer(answer), normalize_answer(reference)
    x, y = _number(a), _number(b)
    if x is not None and y is not None:
        if x[1] or y[1]:
            return Verdict(x[0] == y[0], "fraction", a, b)
        return Verdict(close(x[0], y[0]), "numeric", a, b)
    if "".join(a.lower().split()) == "".join(b.lower().split()):
        return Verdict(True, "string", a, b)
    if not (_MATH_SIGN.search(a) or _MATH_SIGN.search(b)):  # two words ("red", "der") are not algebra
        return Verdict(False, "string", a, b)
    ea, eb = _sympy_expr(a), _sympy_expr(b)
    if ea is None or eb is None:
        return Verdict(False, "string", a, b)
    equal, method = _sympy_equal(ea, eb)
    return Verdict(equal, method, a, b)


# ------------------------------------------------------- calculator steps

_DECIMALS = re.compile(r"^\s*[-+]?\d*\.(\d+)\s*$")


@dataclass(frozen=True)
class BadStep:
    """The first calculator step whose claimed result is wrong (1-based among the trace's steps)."""

    index: int
    expression: str
    claimed: str
    computed: Fraction


@dataclass(frozen=True)
class StepCheck:
    """How many steps could be checked, how many could not (variables, words) and the first bad
    one: a trace with many unchecked steps is only as trustworthy as its answer."""

    checked: int = 0
    unchecked: int = 0
    bad: BadStep | None = None


def _claim_holds(computed: Fraction, claim: str, claimed: Fraction) -> bool:
    """The claim is the value, or the value rounded to the claim's own decimals (GSM8K writes
    ``<<10/3=3.33>>``); an integer claim must be exact, since ``7/2=3`` is a real mistake."""
    if close(computed, claimed):
        return True
    decimals = _DECIMALS.match(claim)
    return decimals is not None and abs(computed - claimed) <= Fraction(1, 2 * 10 ** len(decimals.group(1)))


def check_steps(text: str) -> StepCheck:
    """Every ``<<expression=claim>>`` of the trace evaluated exactly and held against its claim."""
    checked = unchecked = 0
    bad: BadStep | None = None
    for index, m in enumerate(_ANNOTATION.finditer(text), start=1):
        parts = m.group(1).replace("$", "").split("=")  # teachers sometimes write <<5*$4=$20>>
        values = [arithmetic_value(p) for p in parts] if len(parts) == 2 else [None]
        if None in values:
            unchecked += 1
            continue
        checked += 1
        computed, claimed = values
        if bad is None and not _claim_holds(computed, parts[1], claimed):
            bad = BadStep(index, parts[0].strip(), parts[1].strip(), computed)
    return StepCheck(checked, unchecked, bad)


# ---------------------------------------------------------------- judging

@dataclass(frozen=True)
class Judgement:
    """One trace's fate: kept, or the reason it was rejected with what was found and expected."""

    kept: bool
    reason: Reason | None
    answer: str | None
    expected: str | None
    rule: Rule | None = None
    detail: str | None = None
    steps: StepCheck = StepCheck()
    verdict: Verdict | None = None


def _show(value: Fraction) -> str:
    """A computed value as a person would write it."""
    return str(value.numerator) if value.denominator == 1 else f"{float(value):.10g}"


def judge_trace(text: str, reference: str | None = None, *,
                pattern: str | re.Pattern[str] | None = None) -> Judgement:
    """One trace on its own: an answer must be found, every checkable step must hold and, when a
    reference exists, the answer must equal it. Without a reference a kept trace still has to
    win the problem's vote (``judge_problem``)."""
    steps = check_steps(text)
    found = extract_answer(text, pattern)
    if found is None:
        return Judgement(False, "no_answer_found", None, reference, steps=steps,
                         detail="no final answer (####, \\boxed, 'the answer is', pattern)")
    if steps.bad is not None:
        s = steps.bad
        return Judgement(False, "bad_step", found.answer, reference, found.rule, steps=steps,
                         detail=f"step {s.index}: {s.expression} = {s.claimed}, computed {_show(s.computed)}")
    if reference is None:
        return Judgement(True, None, found.answer, None, found.rule, steps=steps)
    verdict = compare_answers(found.answer, reference)
    if not verdict.equal:
        return Judgement(False, "wrong_answer", found.answer, reference, found.rule, steps=steps, verdict=verdict,
                         detail=f"{verdict.answer!r} != {verdict.reference!r} ({verdict.method})")
    return Judgement(True, None, found.answer, reference, found.rule, steps=steps, verdict=verdict)


# ------------------------------------------------------------ near-duplicates

def _shingles(text: str, n: int) -> frozenset[str]:
    """Character n-grams; a text shorter than n is its own single shingle."""
    return frozenset(text[i:i + n] for i in range(len(text) - n + 1)) or frozenset({text})


def near_duplicate_clusters(texts: Sequence[str], threshold: float = 0.9, n: int = 5) -> list[list[int]]:
    """Traces of one problem grouped when they are near-copies (whitespace-normalised character
    n-gram Jaccard >= threshold with any earlier member; exact copies score 1): a teacher that
    repeats itself must not win a vote by repetition. Clusters and members are in input order.
    Quadratic in the traces, which is fine for the handful a problem has."""
    grams = [_shingles(" ".join(t.split()), n) for t in texts]
    clusters: list[list[int]] = []
    for i, g in enumerate(grams):
        home = next((c for c in clusters
                     if any(len(g & grams[j]) >= threshold * len(g | grams[j]) for j in c)), None)
        if home is None:
            clusters.append([i])
        else:
            home.append(i)
    return clusters


# ---------------------------------------------------------------- majority vote

def required_agreement(min_agree: int | float, voters: int) -> int:
    """The votes the largest group needs: an int is a count, a float in (0, 1] a fraction of the
    voters rounded up (0.8 of 5 -> 4). Rounding absorbs float error (0.6 * 5 = 3.0000000000000004)."""
    if isinstance(min_agree, bool) or not isinstance(min_agree, (int, float)):
        raise TypeError(f"min_agree must be an int count or a float fraction, not {min_agree!r}")
    if isinstance(min_agree, int):
        if min_agree < 1:
            raise ValueError(f"min_agree as a count must be >= 1, not {min_agree}")
        return min_agree
    if not 0 < min_agree <= 1:
        raise ValueError(f"min_agree as a fraction must be in (0, 1], not {min_agree}")
    return max(1, math.ceil(round(min_agree * voters, 9)))


def group_answers(answers: Sequence[str | None]) -> list[list[int]]:
    """Indices of equal answers (``compare_answers``, so ``18`` and ``$18.00`` are one group),
    each joining the first group whose first answer it equals; None (no answer) joins none."""
    groups: list[list[int]] = []
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        home = next((g for g in groups if compare_answers(answer, answers[g[0]]).equal), None)
        if home is None:
            groups.append([i])
        else:
            home.append(i)
    return groups


def majority_vote(answers: Sequence[str | None], *, min_agree: int | float, min_traces: int) -> list[Judgement]:
    """Each independent trace's fate from its answer alone (None: no answer, votes for nothing
    but counts among the voters). The largest group wins when it has ``required_agreement``
    votes, there are at least ``min_traces`` voters and no other group is as large."""
    need = required_agreement(min_agree, len(answers))
    groups = sorted(group_answers(answers), key=len, reverse=True)
    top = len(groups[0]) if groups else 0
    tie = len(groups) > 1 and len(groups[1]) == top
    if len(answers) < min_traces:
        why = f"{len(answers)} independent traces, {min_traces} needed"
    elif tie:
        why = f"tie between answer groups of {top}"
    else:
        why = f"{top} of {len(answers)} independent traces agree, {need} needed"
    winners = set(groups[0]) if groups and top >= need and not tie and len(answers) >= min_traces else set()
    expected = answers[groups[0][0]] if winners else None
    return [Judgement(False, "no_answer_found", None, expected) if a is None
            else Judgement(i in winners, None if i in winners else "no_majority", a, expected, detail=why)
            for i, a in enumerate(answers)]


def judge_problem(texts: Sequence[str], reference: str | None = None, *, min_agree: int | float = 0.5,
                  min_traces: int = 3, pattern: str | re.Pattern[str] | None = None,
                  duplicate_threshold: float = 0.9) -> list[Judgement]:
    """Every trace of one problem, in input order: judged on its own (``judge_trace``), then
    near-copies collapsed to one representative each, then, without a reference, the
    representatives' majority vote. The defaults (half the clusters, at least 3) are a plain
    majority; labs that want self-consistency set e.g. ``min_agree=0.8``. A
    ``duplicate_threshold`` above 1 turns the collapse off (no two traces score above 1)."""
    own = [judge_trace(t, reference, pattern=pattern) for t in texts]
    clusters = near_duplicate_clusters(texts, duplicate_threshold)
    reps = [next((i for i in c if own[i].kept), c[0]) for c in clusters]
    fate = {r: own[r] for r in reps}
    if reference is None:
        votes = majority_vote([own[r].answer if own[r].kept else None for r in reps],
                              min_agree=min_agree, min_traces=min_traces)
        for r, v in zip(reps, votes):
            if own[r].kept:
                fate[r] = replace(own[r], kept=v.kept, reason=v.reason, expected=v.expected, detail=v.detail)
    out = list(own)
    for cluster, r in zip(clusters, reps):
        for m in cluster:
            if m == r:
                out[m] = fate[r]
            elif own[m].kept and fate[r].kept and reference is None and not compare_answers(
                    own[m].answer, fate[r].expected).equal:
                # a near-copy that ends on another answer did not vote; it is judged against the winner
                out[m] = replace(own[m], kept=False, reason="wrong_answer", expected=fate[r].expected,
                                 detail=f"{own[m].answer!r} != majority {fate[r].expected!r} (near-copy of trace {r})")
            elif own[m].kept:
                out[m] = (replace(own[m], kept=False, reason="duplicate_trace", detail=f"near-copy of trace {r}")
                          if fate[r].kept else
                          replace(own[m], kept=False, reason=fate[r].reason, expected=fate[r].expected,
                                  detail=fate[r].detail))
    return out
