"""What a build produced, for people: the mixture schedule and the mixing laws' predictions as
pictures, and a markdown report.

``schedule_svg`` draws each source's share of the mixture against tokens seen (the
plan's integral, differentiated per cell), with the phase boundaries; it is plain
SVG, so it needs no plotting library and embeds in the Dagster UI's markdown.
``build_report`` summarises every stage's funnel per source, the plan, the mixture's
realised-vs-target table and the token-estimate check from the manifests.
"""

from __future__ import annotations

import base64

import numpy as np

from corpusmix.core.manifest import iter_manifests, read_manifest
from corpusmix.core.spec import LoadedSpec
from corpusmix.mixture.plan import traces_lines
from corpusmix.pipeline import active_stages

PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
           "#64B5CD")


def schedule_svg(plan: dict, width: int = 720, height: int = 300) -> str:
    """Shares over tokens seen, one line per source, phase boundaries dashed."""
    x = np.array(plan["grid"]["x"])
    left, right, top, bottom = 50, 140, 20, 40
    w, h = width - left - right, height - top - bottom
    budget = max(float(x[-1]), 1.0)
    mid = (x[1:] + x[:-1]) / 2
    dx = np.diff(x)
    px = lambda v: left + w * v / budget  # noqa: E731
    py = lambda s: top + h * (1 - s)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
             f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#333"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" stroke="#333"/>']
    for frac in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<text x="{left - 6}" y="{py(frac) + 4:.1f}" text-anchor="end">{frac:.2f}</text>')
        parts.append(f'<text x="{px(frac * budget):.1f}" y="{top + h + 16}" text-anchor="middle">'
                     f'{frac * budget / 1e6:.3g}M</text>')
    for ph in plan["phases"]:
        xb = px(ph["end"])
        parts.append(f'<line x1="{xb:.1f}" y1="{top}" x2="{xb:.1f}" y2="{top + h}" stroke="#999" '
                     f'stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{px((ph["start"] + ph["end"]) / 2):.1f}" y="{top - 6}" text-anchor="middle" '
                     f'fill="#555">{ph["name"]}</text>')
    for i, s in enumerate(plan["sources"]):
        share = np.diff(np.array(plan["grid"]["cumulative"][s])) / np.maximum(dx, 1e-12)
        pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(mid, share))
        color = PALETTE[i % len(PALETTE)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        parts.append(f'<rect x="{left + w + 14}" y="{top + 14 * i}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{left + w + 28}" y="{top + 14 * i + 9}">{s}</text>')
    parts.append(f'<text x="{left + w / 2:.1f}" y="{height - 6}" text-anchor="middle">tokens seen '
                 f'(share of the mixture on the vertical axis)</text></svg>')
    return "".join(parts)


def scatter_svg(observed: np.ndarray, predicted: np.ndarray, title: str, marks: dict[str, float] | None = None,
                size: int = 360) -> str:
    """Predicted against observed, one dot per proxy run, the diagonal where they agree; ``marks``
    (label -> predicted value) are drawn as horizontal lines: where a proposal is expected to land."""
    pad, top = 56, 30
    w = size - pad - 16
    values = np.concatenate([observed, predicted, list((marks or {}).values())])
    lo, hi = float(values.min()), float(values.max())
    span = (hi - lo) or 1.0
    lo, hi = lo - 0.05 * span, hi + 0.05 * span
    px = lambda v: pad + w * (v - lo) / (hi - lo)  # noqa: E731
    py = lambda v: top + w * (1 - (v - lo) / (hi - lo))  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size + 14}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{size / 2:.1f}" y="16" text-anchor="middle">{title}</text>',
             f'<rect x="{pad}" y="{top}" width="{w}" height="{w}" fill="none" stroke="#333"/>',
             f'<line x1="{px(lo):.1f}" y1="{py(lo):.1f}" x2="{px(hi):.1f}" y2="{py(hi):.1f}" stroke="#999" '
             f'stroke-dasharray="4 3"/>']
    for v in (lo, (lo + hi) / 2, hi):
        parts.append(f'<text x="{px(v):.1f}" y="{top + w + 14}" text-anchor="middle">{v:.3f}</text>')
        parts.append(f'<text x="{pad - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.3f}</text>')
    for i, (label, v) in enumerate((marks or {}).items()):
        color = PALETTE[(i + 1) % len(PALETTE)]
        parts.append(f'<line x1="{pad}" y1="{py(v):.1f}" x2="{pad + w}" y2="{py(v):.1f}" stroke="{color}"/>'
                     f'<text x="{pad + 4}" y="{py(v) - 3:.1f}" fill="{color}">{label}</text>')
    parts += [f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="3" fill="{PALETTE[0]}" fill-opacity="0.7"/>'
              for a, b in zip(observed, predicted)]
    parts.append(f'<text x="{pad + w / 2:.1f}" y="{size + 10}" text-anchor="middle">observed (measured)'
                 f'; vertical: predicted</text></svg>')
    return "".join(parts)


def svg_markdown(svg: str, alt: str) -> str:
    return f"![{alt}](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()})"


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def build_report(loaded: LoadedSpec) -> str:
    """A markdown report of the build from its manifests (what `corpusmix report` prints)."""
    ms = {}
    for p in iter_manifests(loaded.manifest_root):
        try:
            m = read_manifest(p)
        except Exception:  # noqa: BLE001 - verify names unreadable manifests; the report skips them
            continue
        ms[(m["asset"], m["partition"])] = m
    funnels = [(stage, part, m) for stage in (s.name for s in active_stages(loaded.spec))  # build order, with a funnel
               for (asset, part), m in sorted(ms.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
               if asset == stage and "documents_out" in m["counts"]]
    estimated = any(m["token_counting"].get("method") == "estimate" for _, _, m in funnels)
    lines = [f"# Build report: {loaded.spec.name}", "", f"Spec: `{loaded.path}`  ", "",
             "## Funnel per stage and source", "",
             ("Token counts marked * are estimates (the tokenizer is trained by the build); the section on the "
              "estimate below gives their measured error. Unmarked counts are exact." if estimated else
              "Every token count is exact: each document was encoded with the spec's tokenizer file at ingest."), "",
             _row(["stage", "source", "documents in", "documents out", "tokens in", "tokens out", "token acceptance",
                   "version"]), _row(["---"] * 8)]
    for stage, part, m in funnels:
        c, rate = m["counts"], m["rates"].get("token_acceptance")
        mark = "*" if m["token_counting"].get("method") == "estimate" else ""
        lines.append(_row([stage, part or "(all)", f"{c['documents_in']:,}", f"{c['documents_out']:,}",
                           f"{c['tokens_in']:,}{mark}", f"{c['tokens_out']:,}{mark}",
                           "" if rate is None else f"{100 * rate:.2f} %", f"`{m['version']}`"]))
    lines += _rejection_reasons(funnels)
    lines += _trace_funnels(loaded, ms)
    checks = [(p, m["details"]["estimate_check"]) for (a, p), m in sorted(ms.items(), key=lambda kv: str(kv[0]))
              if a == "tokenize"]
    if checks and estimated:
        lines += ["", "## Token estimate of the stages before tokenize, against exact counts", "",
                  _row(["source", "estimated", "exact", "error"]), _row(["---"] * 4)]
        lines += [_row([p, f"{c['estimated_tokens']:,}", f"{c['exact_tokens']:,}",
                        f"{100 * (c['relative_error'] or 0):+.2f} %"]) for p, c in checks]
    if loaded.spec.eval_sets:
        from corpusmix.stages.decontaminate import contamination_summary

        lines += ["", "## Contamination: training documents sharing an n-gram with an eval item", "",
                  f"Policy `{loaded.spec.decontamination.policy}`, {loaded.spec.decontamination.ngram}-grams; every "
                  "match is in `contamination.parquet` (`corpusmix audit SPEC sql`, view `contamination`).", "",
                  _row(["source", "eval set", "documents dropped", "documents cut", "eval items found"]),
                  _row(["---"] * 5)]
        lines += [_row([r["source"], r["eval_set"], f"{r['documents_dropped']:,}", f"{r['documents_cut']:,}",
                        f"{r['items_found']:,}"] if r["built"] else [r["source"], r["eval_set"], "not built", "", ""])
                  for r in contamination_summary(loaded)]
    plan = ms.get(("mixture_plan", None))
    if plan:
        d = plan["details"]
        lines += ["", "## Mixture plan", "", f"Availability: {d['availability']}"
                  + ("; shares renormalised under the epoch cap" if d["renormalized"] else ""), "",
                  _row(["source", "share", "allocated", "available", "epochs", "over cap", "synthetic needed"]),
                  _row(["---"] * 7)]
        lines += [_row([s, f"{r['share']:.4f}", f"{r['allocated']:,.0f}", f"{r['available']:,}", f"{r['epochs']:.3f}",
                        "yes" if r["over_cap"] else "no", f"{r['synthetic_tokens_needed']:,.0f}"])
                  for s, r in d["per_source"].items()]
        traces = [line for s in d["per_source"] for line in traces_lines(d, s)]
        lines += ["", *(f"- {line}" for line in traces)] if traces else []
    shards = ms.get(("mixed_shards", None))
    if shards:
        lines += ["", "## Mixed shards", "",
                  f"{shards['counts']['tokens_out']:,} tokens in {shards['counts']['shards']} shards "
                  f"({shards['details']['dtype']}, EOS {shards['details']['eos_id']}), "
                  f"{shards['counts']['samples']:,} samples of {shards['details']['seq_len']}.", "",
                  _row(["phase", "source", "target", "realised", "deviation", "within tolerance"]), _row(["---"] * 6)]
        for ph in shards["details"]["phases"]:
            lines += [_row([ph["name"], s, f"{r['target']:,.0f}", f"{r['realised']:,}", f"{r['deviation']:+,.0f}",
                            "yes" if r["ok"] else "**no**"]) for s, r in ph["sources"].items()]
    return "\n".join(lines) + "\n"


def _rejection_reasons(funnels: list[tuple[str, str | None, dict]], top: int = 5) -> list[str]:
    """Per stage and source, the reasons that removed the most tokens: each removed document
    counted once (the additive funnel), and, for rules that overlap, how many documents failed
    the rule at all and how many it alone rejected."""
    rows = []
    for stage, part, m in funnels:
        tin = max(1, m["counts"]["tokens_in"])
        mark = "*" if m["token_counting"].get("method") == "estimate" else ""
        ranked = sorted(m["reasons"].items(), key=lambda kv: (-kv[1]["tokens"], kv[0]))[:top]
        rows += [_row([stage, part or "(all)", reason, f"{r['records']:,}", f"{r['tokens']:,}{mark}",
                       f"{100 * r['tokens'] / tin:.2f} %", f"{r.get('failed_records', r['records']):,}",
                       f"{r.get('only_this_rule', r['records']):,}"]) for reason, r in ranked if r["records"]]
    if not rows:
        return []
    return ["", f"## Why documents were removed (top {top} reasons per stage and source, by tokens)", "",
            "Each removed document is charged to one reason (quality: its first failed rule in the spec's "
            "order), so the rows add up to the funnel; \"failed\" counts every document that failed the rule, "
            "\"only\" those it alone rejected.", "",
            _row(["stage", "source", "reason", "documents", "tokens", "share of tokens in", "failed", "only"]),
            _row(["---"] * 8), *rows]


TRACE_STEP_LABELS = {"generated": "generated", "answer_found": "answer found", "correct": "correct",
                     "distinct": "distinct", "passed_quality": "kept (passed dedup + quality)"}


def trace_funnel_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """A trace funnel (``stages.trace_funnel``) as a table for people, the UI's and REPORT.md's:
    one row per strategy or difficulty value, per step "documents (share of generated) / tokens
    (share of generated)"."""
    steps = [s for s in TRACE_STEP_LABELS if f"{s}_documents" in (rows[0] if rows else {})]
    header = ["by", "value", *(TRACE_STEP_LABELS[s] for s in steps)]
    cells = []
    for r in rows:
        n, t = max(1, r["generated_documents"]), max(1, r["generated_tokens"])
        cells.append([r["by"] or "all traces", "" if r["by"] is None else str(r["value"]),
                      *(f"{r[f'{s}_documents']:,} ({100 * r[f'{s}_documents'] / n:.1f} %) / "
                        f"{r[f'{s}_tokens']:,} tok ({100 * r[f'{s}_tokens'] / t:.1f} %)" for s in steps)])
    return header, cells


def _trace_funnels(loaded: LoadedSpec, ms: dict) -> list[str]:
    """Per reasoning_traces source, the step funnel per strategy and difficulty: through quality
    when quality is built (its manifest adds the last step), else trace_validation's steps."""
    lines = []
    for s in (s for s in loaded.spec.sources if s.traces is not None):
        quality, validation = ms.get(("quality", s.name)), ms.get(("trace_validation", s.name))
        rows = ((quality or {}).get("details") or {}).get("trace_funnel") or (
            (validation or {}).get("details") or {}).get("funnel")
        if not rows:
            continue
        header, cells = trace_funnel_cells(rows)
        c = validation["counts"] if validation else {}
        lines += ["", f"### {s.name}: {c.get('problems', 0):,} problems, {c.get('problems_by_reference', 0):,} "
                      f"judged by their reference answer, {c.get('problems_by_majority', 0):,} by majority vote", "",
                  _row(header), _row(["---"] * len(header)), *(_row(r) for r in cells)]
    if not lines:
        return []
    return ["", "## Reasoning traces: generated to kept, per strategy and difficulty", "",
            "Each step holds the traces that passed every step before it: an answer found, the answer correct "
            "(reference or majority) with every calculator step true, distinct (near-copies of one problem count "
            "once), then still there after dedup, decontamination and the quality rules. Every trace's verdict "
            "is in `trace_verdicts` (`corpusmix audit SPEC sql`, view `traces`).", *lines]


def write_report(loaded: LoadedSpec) -> str:
    """Write the build report next to the manifests (REPORT.md, atomically); returns its path."""
    from corpusmix.core.storage import atomic_write_bytes

    path = loaded.manifest_root / "REPORT.md"
    atomic_write_bytes(path, build_report(loaded).encode())
    return str(path)
