"""corpusmix's Gopher quality + repetition rules against datatrove's GopherQualityFilter +
GopherRepetitionFilter on the prose sources of ../shared/corpus, in the same run.

Usage:  python benchmarks/quality_vs_datatrove.py [--sources wiki,books,web] [--repeats 3]
            [--no-split-variant] [--examples 2] [--no-explain-all]

Both sides read every document's ``text`` exactly as stored in the JSONL.gz shards.

* corpusmix: ``evaluate(text, resolve_rules("prose", GOPHER, {}))``; a document is kept when
  it fails no rule. Every rule is measured on every document (no early exit).
* datatrove (0.10.1, in ``.bench-venv``, run as ``--datatrove-child`` by that venv's python,
  importing only datatrove and the standard library): ``GopherQualityFilter`` then, for the
  documents it keeps, ``GopherRepetitionFilter`` -- what a pipeline [quality, repetition]
  does -- called through ``.filter(doc)``; the drop reason is the first check that fails.
  Thresholds are corpusmix's defaults, read from ``RULES`` in the parent and passed to the
  child as JSON through ``CHECKS`` below (corpusmix rule -> datatrove constructor arguments);
  datatrove's checks that no corpusmix rule maps to are set to None (disabled).
  Word tokenizer: ``dt`` is datatrove's default for language "en" (``SpaCyTokenizer("en")``:
  ``spacy.blank("en")``, punctuation split off as tokens); ``dt-split`` is ``str.split`` (a
  custom ``WordTokenizer``; datatrove's own ``WhitespaceTokenizer`` is spaCy's "xx" tokenizer,
  not a whitespace split), which is how corpusmix splits words.

Throughput: per repeat the tools run one after the other, rotating which goes first, each
in a single process; each times only its per-document loop over texts already in memory
(datatrove: ``Document`` objects built beforehand; spaCy loaded beforehand). Medians of
--repeats. MB = 10^6 bytes of UTF-8 text.

Agreement: per source, the confusion of keep/drop decisions. To say which rule disagrees,
the datatrove child is run again (untimed) with one check enabled at a time, on the
documents where the decisions differ (or on every document with --explain-all, the
default, which also gives per-rule agreement), and datatrove's measured values are
recomputed with datatrove's own helpers for the examples.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
BENCH_VENV = REPO / ".bench-venv"
BENCH_PY = BENCH_VENV / "bin" / "python"
CORPUS = REPO.parent / "shared" / "corpus"
PROSE = ["wiki", "books", "web"]
DATATROVE_REQS = ["datatrove==0.10.1", "spacy", "numpy"]
DATATROVE_IMPORTS = "import datatrove.pipeline.filters, spacy, numpy"

# corpusmix rule -> (datatrove filter, {datatrove constructor argument: corpusmix parameter}).
# n-gram rules give their (n, max_fraction) to the filter's top_n_grams / dup_n_grams tuple.
CHECKS: dict[str, tuple[str, dict[str, str]]] = {
    "gopher_word_count": ("quality", {"min_doc_words": "min_words", "max_doc_words": "max_words"}),
    "gopher_mean_word_length": ("quality", {"min_avg_word_length": "min_len", "max_avg_word_length": "max_len"}),
    "gopher_symbol_word_ratio": ("quality", {"max_symbol_word_ratio": "max_ratio"}),
    "gopher_bullet_lines": ("quality", {"max_bullet_lines_ratio": "max_fraction"}),
    "gopher_ellipsis_lines": ("quality", {"max_ellipsis_lines_ratio": "max_fraction"}),
    # datatrove's name is misleading: it is the minimum fraction of words with a letter
    "gopher_alpha_words": ("quality", {"max_non_alpha_words_ratio": "min_fraction"}),
    "gopher_stop_words": ("quality", {"min_stop_words": "min_count"}),
    "gopher_dup_line_fraction": ("repetition", {"dup_line_frac": "max_fraction"}),
    "gopher_dup_line_char_fraction": ("repetition", {"dup_line_char_frac": "max_fraction"}),
    "gopher_dup_para_fraction": ("repetition", {"dup_para_frac": "max_fraction"}),
    "gopher_dup_para_char_fraction": ("repetition", {"dup_para_char_frac": "max_fraction"}),
    **{f"gopher_top_{n}gram_char_fraction": ("repetition", {"top_n_grams": "n,max_fraction"}) for n in (2, 3, 4)},
    **{f"gopher_dup_{n}gram_char_fraction": ("repetition", {"dup_n_grams": "n,max_fraction"})
       for n in range(5, 11)},
}
DT_ARGS = {
    "quality": ["min_doc_words", "max_doc_words", "min_avg_word_length", "max_avg_word_length",
                "max_symbol_word_ratio", "max_bullet_lines_ratio", "max_ellipsis_lines_ratio",
                "max_non_alpha_words_ratio", "min_stop_words"],
    "repetition": ["dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac",
                   "top_n_grams", "dup_n_grams"],
}
# datatrove drop reason -> corpusmix rule
REASONS = {
    "gopher_short_doc": "gopher_word_count", "gopher_long_doc": "gopher_word_count",
    "gopher_below_avg_threshold": "gopher_mean_word_length", "gopher_above_avg_threshold": "gopher_mean_word_length",
    "gopher_too_many_hashes": "gopher_symbol_word_ratio", "gopher_too_many_ellipsis": "gopher_symbol_word_ratio",
    "gopher_too_many_bullets": "gopher_bullet_lines", "gopher_too_many_end_ellipsis": "gopher_ellipsis_lines",
    "gopher_below_alpha_threshold": "gopher_alpha_words", "gopher_enough_stop_words": "gopher_stop_words",
    "dup_line_frac": "gopher_dup_line_fraction", "dup_line_char_frac": "gopher_dup_line_char_fraction",
    "dup_para_frac": "gopher_dup_para_fraction", "dup_para_char_frac": "gopher_dup_para_char_fraction",
    **{f"top_{n}_gram": f"gopher_top_{n}gram_char_fraction" for n in (2, 3, 4)},
    **{f"duplicated_{n}_n_grams": f"gopher_dup_{n}gram_char_fraction" for n in range(5, 11)},
    "empty": "(datatrove: empty text)",
}


def read_source(name: str, ids: set[str] | None = None) -> list[tuple[str, str]]:
    """(id, text) of every record of a source, in shard order, text as stored."""
    docs = []
    for path in sorted((CORPUS / name).glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                if ids is None or rec["id"] in ids:
                    docs.append((rec["id"], rec["text"]))
    return docs


# --------------------------------------------------------------------------- datatrove child

def _dt_tokenizer(kind: str):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from datatrove_words import datatrove_language

    return datatrove_language(kind)


def _dt_filters(cfg: dict, language, only: str | None = None):
    """(quality, repetition) filters with cfg's arguments; with ``only``, just that rule's check."""
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

    off = {"quality": {a: None for a in DT_ARGS["quality"]},
           "repetition": {**{a: None for a in DT_ARGS["repetition"]}, "top_n_grams": (), "dup_n_grams": ()}}
    if only is None:
        kw = {f: {**off[f], **{k: v for k, v in cfg["args"][f].items()}} for f in off}
    else:
        kw = {f: dict(off[f]) for f in off}
        f, args = cfg["checks"][only]
        kw[f].update(args)
    for f in kw:
        for k in ("top_n_grams", "dup_n_grams"):
            if k in kw[f]:
                kw[f][k] = tuple(tuple(x) for x in kw[f][k])
    q = GopherQualityFilter(**kw["quality"], stop_words=cfg["stop_words"], language=language)
    r = GopherRepetitionFilter(**kw["repetition"], language=language)
    return q, r


def _dt_measure(text: str, words: list[str], stop_words: set[str]) -> dict[str, float]:
    """datatrove's measured values, recomputed as its filters compute them (for examples)."""
    import re

    from datatrove.pipeline.filters.gopher_repetition_filter import (
        find_all_duplicate,
        find_duplicates,
        find_top_duplicate,
        get_n_grams,
    )
    from datatrove.utils.text import PUNCTUATION_SET

    v: dict[str, float] = {}
    nw = len(words) or math.nan
    nsw = [w for w in words if any(ch not in PUNCTUATION_SET for ch in w)]
    v["gopher_word_count"] = len(nsw)
    v["gopher_mean_word_length"] = sum(map(len, nsw)) / len(nsw) if nsw else math.nan
    v["gopher_symbol_word_ratio"] = max(text.count("#"), text.count("...") + text.count("…")) / nw
    lines = text.splitlines() or [""]
    v["gopher_bullet_lines"] = sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines)
    v["gopher_ellipsis_lines"] = sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines)
    v["gopher_alpha_words"] = sum(any(c.isalpha() for c in w) for w in words) / nw
    v["gopher_stop_words"] = len(stop_words & set(words))
    n = len(text) or math.nan
    paras = re.split(r"\n{2,}", text.strip())
    d, c = find_duplicates(paras)
    v["gopher_dup_para_fraction"], v["gopher_dup_para_char_fraction"] = d / len(paras), c / n
    lns = re.split("\n+", text)
    d, c = find_duplicates(lns)
    v["gopher_dup_line_fraction"], v["gopher_dup_line_char_fraction"] = d / len(lns), c / n
    for k in (2, 3, 4):
        g = get_n_grams(words, k)
        v[f"gopher_top_{k}gram_char_fraction"] = find_top_duplicate(g) / n if g else 0.0
    for k in range(5, 11):
        v[f"gopher_dup_{k}gram_char_fraction"] = find_all_duplicate(words, k) / n
    return v


def datatrove_child(args: argparse.Namespace) -> None:
    import warnings

    from datatrove.data import Document
    from datatrove.pipeline.filters.base_filter import get_filter_result
    from datatrove.utils.text import split_into_words

    warnings.filterwarnings("ignore")  # np.mean of no words in single-check runs
    cfg = json.loads(Path(args.config).read_text())
    language = _dt_tokenizer(args.tokenizer)
    split_into_words("warm up the tokenizer .", language)  # spaCy loads on first use: not timed
    out: dict = {"tokenizer": args.tokenizer, "sources": {}}
    if not args.explain:
        q, r = _dt_filters(cfg, language)
        for name in cfg["sources"]:
            docs = [Document(text=t, id=i) for i, t in read_source(name)]
            keep, reason = [], []
            t0 = time.perf_counter()
            for doc in docs:
                ok, why = get_filter_result(q.filter(doc))
                if ok:
                    ok, why = get_filter_result(r.filter(doc))
                keep.append(bool(ok))
                reason.append(why)
            sec = time.perf_counter() - t0
            out["sources"][name] = {"seconds": sec, "ids": [d.id for d in docs], "keep": keep, "reason": reason,
                                    "bytes": sum(len(d.text.encode()) for d in docs)}
    else:
        want = cfg["explain"]
        single = {rule: _dt_filters(cfg, language, only=rule) for rule in cfg["checks"]}
        stop = set(cfg["stop_words"])
        for name, ids in want.items():
            res = {}
            for i, t in read_source(name, set(ids) if ids is not None else None):
                doc = Document(text=t, id=i)
                fails = {}
                for rule, (q, r) in single.items():
                    f = q if cfg["checks"][rule][0] == "quality" else r
                    try:
                        ok, why = get_filter_result(f.filter(doc))
                    except ZeroDivisionError:  # no words / no lines: only word count applies
                        ok, why = True, None
                    if not ok and why != "empty":  # empty text: the repetition filter's own drop
                        fails[rule] = why
                words = split_into_words(t, language) if t else []
                res[i] = {"fails": fails, "values": _dt_measure(t, words, stop) if t else {}}
            out["sources"][name] = res
    Path(args.out).write_text(json.dumps(out))


def run_child(cfg: dict, tokenizer: str, explain: bool = False) -> dict:
    work = Path(tempfile.mkdtemp(prefix="dtq-bench-"))
    try:
        (work / "cfg.json").write_text(json.dumps(cfg))
        cmd = [str(BENCH_PY), str(HERE), "--datatrove-child", "--config", str(work / "cfg.json"),
               "--tokenizer", tokenizer, "--out", str(work / "out.json")] + (["--explain"] if explain else [])
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        env["PATH"] = f"{BENCH_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(work))
        if p.returncode != 0:
            raise RuntimeError(f"datatrove child failed (rc {p.returncode}):\n{(p.stdout + p.stderr)[-4000:]}")
        return json.loads((work / "out.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_bench_venv() -> str:
    if Path(sys.prefix).resolve() == BENCH_VENV.resolve():
        raise SystemExit("run the parent with the project's .venv, not .bench-venv")
    if not BENCH_PY.exists():
        subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(BENCH_VENV)], check=True)
    if subprocess.run([str(BENCH_PY), "-c", DATATROVE_IMPORTS], capture_output=True).returncode != 0:
        print(f"installing {' '.join(DATATROVE_REQS)} into {BENCH_VENV}", file=sys.stderr)
        subprocess.run([str(BENCH_PY), "-m", "pip", "install", "-q", *DATATROVE_REQS], check=True)
    return subprocess.run([str(BENCH_PY), "-c", "import importlib.metadata as m; print(m.version('datatrove'))"],
                          capture_output=True, text=True, check=True).stdout.strip()


# --------------------------------------------------------------------------- parent

def build_config(rules: dict[str, dict], stop_words) -> tuple[dict, list[str], list[str]]:
    """datatrove arguments from corpusmix's parameters; (config, our rules unmapped, dt args off)."""
    args: dict[str, dict] = {"quality": {}, "repetition": {"top_n_grams": [], "dup_n_grams": []}}
    checks: dict[str, list] = {}
    ours_only = [n for n in rules if n not in CHECKS]
    for name, params in rules.items():
        if name not in CHECKS:
            continue
        f, amap = CHECKS[name]
        one = {}
        for dt_arg, ours in amap.items():
            if dt_arg in ("top_n_grams", "dup_n_grams"):
                args[f][dt_arg].append([params["n"], params["max_fraction"]])
                one[dt_arg] = [[params["n"], params["max_fraction"]]]
            else:
                args[f][dt_arg] = one[dt_arg] = params[ours]
        checks[name] = [f, one]
    dt_off = [f"{f}.{a}" for f in DT_ARGS for a in DT_ARGS[f] if a not in args[f] or args[f][a] == []]
    return {"args": args, "checks": checks, "stop_words": sorted(stop_words)}, ours_only, dt_off


def fmt(x) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else (f"{x:.0f}" if x == int(x) and abs(x) >= 1 else f"{x:.3f}")
    return str(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", default=",".join(PROSE), help="comma-separated prose sources")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-split-variant", dest="split_variant", action="store_false",
                    help="skip datatrove with a str.split word tokenizer")
    ap.add_argument("--examples", type=int, default=2, help="examples per disagreement pattern")
    ap.add_argument("--patterns", type=int, default=12, help="disagreement patterns shown")
    ap.add_argument("--no-explain-all", dest="explain_all", action="store_false",
                    help="per-check datatrove verdicts only for documents whose decisions differ")
    ap.add_argument("--datatrove-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--tokenizer", choices=["spacy", "split"], default="spacy", help=argparse.SUPPRESS)
    ap.add_argument("--explain", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.datatrove_child:
        datatrove_child(args)
        return

    sys.path.insert(0, str(REPO))
    from corpusmix.stages.quality_rules import GOPHER, GOPHER_STOP_WORDS, evaluate, resolve_rules

    names = [s for s in args.sources.split(",") if s]
    bad = [n for n in names if not (CORPUS / n).is_dir()]
    if bad:
        raise SystemExit(f"unknown source(s) {bad}")
    dt_version = ensure_bench_venv()
    rules = resolve_rules("prose", GOPHER, {})
    cfg, ours_only, dt_off = build_config(rules, GOPHER_STOP_WORDS)
    rules_cmp = {n: p for n, p in rules.items() if n in CHECKS}  # ours-only rules disabled on our side
    cfg["sources"] = names
    docs = {n: read_source(n) for n in names}
    mb = {n: sum(len(t.encode()) for _, t in docs[n]) / 1e6 for n in names}
    evaluate("warm up the rules on a few words of text", rules_cmp)

    def run_ours() -> dict:
        res = {}
        for n in names:
            texts = [t for _, t in docs[n]]
            t0 = time.perf_counter()
            out = [evaluate(t, rules_cmp) for t in texts]
            res[n] = {"seconds": time.perf_counter() - t0, "out": out}
        return res

    tools = ["cm", "dt"] + (["dts"] if args.split_variant else [])
    runs: dict[str, list[dict]] = {k: [] for k in tools}
    for rep in range(args.repeats):
        k = rep % len(tools)
        for tool in tools[k:] + tools[:k]:
            runs[tool].append(run_ours() if tool == "cm" else run_child(cfg, "spacy" if tool == "dt" else "split"))
        print(f"repeat {rep + 1}/{args.repeats} done", file=sys.stderr)

    ours = {n: runs["cm"][0][n]["out"] for n in names}
    variants = {"dt": "spacy"} | ({"dts": "split"} if args.split_variant else {})
    git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True)
    print(f"Gopher quality+repetition on ../shared/corpus ({', '.join(names)}): corpusmix {git.stdout.strip()} "
          f"vs datatrove {dt_version}; {args.repeats} repeats")
    print("parameter map (corpusmix rule: datatrove argument = value):")
    for rule, (f, one) in cfg["checks"].items():
        print(f"  {rule:32} {f}: " + ", ".join(f"{a}={v}" for a, v in one.items()))
    print(f"  stop_words={cfg['stop_words']}")
    print(f"corpusmix rules with no datatrove check (disabled on our side): {ours_only or 'none'}; datatrove "
          f"arguments with no corpusmix rule (set to None): {dt_off or 'none'}; datatrove's extra "
          f"'empty' drop (repetition filter, empty text) is implied by word count on both sides")
    print("dt = datatrove's default tokenizer for 'en' (spaCy blank 'en'); dt-split = str.split")

    # ---- agreement
    for v, tok in variants.items():
        first = runs[v][0]["sources"]
        print(f"\n[{v}] agreement of keep/drop decisions")
        print(f"{'source':8} {'docs':>6} {'MB':>6} {'same %':>7} {'both keep':>9} {'both drop':>9} "
              f"{'only cm drops':>13} {'only dt drops':>13}")
        tot = Counter()
        for n in names:
            d = first[n]
            assert d["ids"] == [i for i, _ in docs[n]], f"document order differs on {n}"
            c = Counter()
            for (_, failed), dk in zip(ours[n], d["keep"]):
                c[("keep" if not failed else "drop", "keep" if dk else "drop")] += 1
            tot += c
            nd = len(d["ids"])
            print(f"{n:8} {nd:>6} {mb[n]:>6.2f} {100 * (c['keep', 'keep'] + c['drop', 'drop']) / nd:>7.2f} "
                  f"{c['keep', 'keep']:>9} {c['drop', 'drop']:>9} {c['drop', 'keep']:>13} {c['keep', 'drop']:>13}")
        nd = sum(tot.values())
        print(f"{'total':8} {nd:>6} {sum(mb.values()):>6.2f} {100 * (tot['keep', 'keep'] + tot['drop', 'drop']) / nd:>7.2f} "
              f"{tot['keep', 'keep']:>9} {tot['drop', 'drop']:>9} {tot['drop', 'keep']:>13} {tot['keep', 'drop']:>13}")
        dtr = Counter(REASONS.get(r, r) for n in names for r in first[n]["reason"] if r)
        print(f"[{v}] datatrove first drop reason: " + ", ".join(f"{k} {c}" for k, c in dtr.most_common()))
        cmr = Counter(r for n in names for _, f in ours[n] for r in f)
        print(f"[{v}] corpusmix failed rules (all, not first): " + ", ".join(f"{k} {c}" for k, c in cmr.most_common()))

        # ---- explain
        want = {}
        for n in names:
            d = first[n]
            dis = [i for i, (_, f), dk in zip(d["ids"], ours[n], d["keep"]) if (not f) != dk]
            want[n] = None if args.explain_all else dis
        ex = run_child({**cfg, "explain": want}, tok, explain=True)["sources"]
        per_rule = Counter()  # (rule, who fails) over all explained documents
        short = 0
        patterns: dict[tuple, list] = defaultdict(list)
        for n in names:
            d = first[n]
            for i, (vals, failed), dk, why in zip(d["ids"], ours[n], d["keep"], d["reason"]):
                if i not in ex[n]:
                    continue
                o, t = set(failed), set(ex[n][i]["fails"])
                if "gopher_word_count" in o | t:
                    short += 1  # too short for one side: under 50 words cm also fails mean/alpha when
                    # empty, and dt fails top-n-gram rules (its top n-gram needs no repeat)
                else:
                    for rule in o ^ t:
                        per_rule[rule, "cm" if rule in o else "dt"] += 1
                if (not failed) != dk:
                    key = ("only cm drops" if failed else "only dt drops",
                           tuple(sorted([f"{r} (cm fails)" for r in o - t] + [f"{r} (dt fails)" for r in t - o])))
                    patterns[key].append((n, i, vals, failed, why, ex[n][i]))
        scope = "all documents" if args.explain_all else "documents whose decisions differ"
        print(f"[{v}] per-rule disagreement, each check run alone on {scope}, less {short} that fail word count "
              f"on either side (cm fails only / dt fails only):")
        for rule in cfg["checks"]:
            a, b = per_rule[rule, "cm"], per_rule[rule, "dt"]
            if a or b:
                print(f"  {rule:32} {a:>5} / {b:<5}")
        print(f"[{v}] documents whose decisions differ, by the rules that disagree:")
        pats = sorted(patterns.items(), key=lambda kv: -len(kv[1]))
        for (direction, diff), items in pats[:args.patterns]:
            print(f"  {len(items):>4}  {direction}: "
                  f"{'; '.join(d.removeprefix('gopher_') for d in diff) or '(no rule alone: combination)'}")
            for n, i, vals, failed, why, e in items[:args.examples]:
                rs = sorted(set(failed) ^ set(e["fails"])) or sorted(set(failed) | set(e["fails"]))
                shown = ", ".join(f"{r.removeprefix('gopher_')} cm {fmt(vals.get(r, math.nan))} dt "
                                  f"{fmt(e['values'].get(r, math.nan))}" for r in rs)
                print(f"        {n}/{i}: cm fails {[r.removeprefix('gopher_') for r in failed]}; dt reason "
                      f"{why!r}; values: {shown}")
        rest = pats[args.patterns:]
        if rest:
            print(f"  ... {len(rest)} more patterns, {sum(len(x) for _, x in rest)} documents")

    # ---- throughput
    med = statistics.median
    print(f"\nthroughput, single process each, median of {args.repeats} (MB/s of text; seconds in brackets)")
    hdr = f"{'source':8} {'MB':>6} {'corpusmix':>16} {'dt (spaCy)':>16} {'cm/dt':>6}"
    if args.split_variant:
        hdr += f" {'dt-split':>16} {'cm/dt-split':>11}"
    print(hdr)
    sec = {t: {n: med(r[n]["seconds"] if t == "cm" else r["sources"][n]["seconds"] for r in runs[t])
               for n in names} for t in tools}
    for n in [*names, "total"]:
        m = sum(mb.values()) if n == "total" else mb[n]
        s = {t: sum(sec[t].values()) if n == "total" else sec[t][n] for t in tools}
        line = (f"{n:8} {m:>6.2f} {m / s['cm']:>8.2f} ({s['cm']:>5.1f}) {m / s['dt']:>8.2f} ({s['dt']:>5.1f}) "
                f"{s['dt'] / s['cm']:>6.2f}")
        if args.split_variant:
            line += f" {m / s['dts']:>8.2f} ({s['dts']:>5.1f}) {s['dts'] / s['cm']:>11.2f}"
        print(line)
    print("corpusmix measures every rule on every document; datatrove stops at the first failing check "
          "(repetition runs only on documents the quality filter keeps)")


if __name__ == "__main__":
    main()
