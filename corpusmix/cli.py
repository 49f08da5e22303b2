"""The engine's commands: init, validate, stages, verify, plan, audit, report.

``corpusmix build`` and ``corpusmix demo`` drive Dagster, so they live in the
Dagster layer (``workflows.cli``, the installed ``corpusmix`` command), which
adds them to this parser; the engine imports no Dagster.

Exit codes: 0 success, 1 the build or verification found a problem, 2 the spec
or the command line is wrong.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import textwrap
from importlib import resources
from pathlib import Path

from corpusmix.core.spec import SpecError, load_spec


def _cmd_init(args) -> int:
    target = Path(args.path)
    if target.exists() and not args.force:
        print(f"{target} exists; pass --force to overwrite", file=sys.stderr)
        return 2
    target.write_text(resources.files("corpusmix").joinpath("templates/example.yaml").read_text())
    print(f"wrote {target}: edit the sources' paths, then `corpusmix validate {target}`")
    return 0


def _cmd_validate(args) -> int:
    from corpusmix.stages.eval_index import check_eval_files

    try:
        loaded = load_spec(args.spec)
        check_eval_files(loaded)
    except SpecError as e:
        print(f"{len(e.issues)} problem(s) in {e.file}:\n{e}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{s.name} ({len(loaded.source_files(s))} files)" for s in loaded.spec.sources)
    print(f"{loaded.path}: valid. sources: {counts}")
    return 0


def _cmd_verify(args) -> int:
    try:
        from corpusmix.ops.verify import verify

        problems = verify(args.spec, args.until)
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return 2
    if problems:
        print(f"{len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print("verified: every output matches its manifest (sha256, size, rows)")
    return 0


def _finite_or_named(value):
    """JSON has no infinity (orjson writes null, which reads as "unknown"): name it "inf" instead."""
    if isinstance(value, dict):
        return {k: _finite_or_named(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_named(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "-inf", "nan": float() reads them back
    return value


def _cmd_plan(args) -> int:
    import orjson

    from corpusmix.mixture.plan import PlanError, availability, make_plan, render_plan

    try:
        loaded = load_spec(args.spec)
        plan = make_plan(loaded, availability(loaded, raw_estimate=True))
        error = None
    except SpecError as e:
        print(f"{len(e.issues)} problem(s) in {e.file}:\n{e}", file=sys.stderr)
        return 2
    except PlanError as e:
        if e.plan is None:
            print(f"cannot plan: {e}", file=sys.stderr)
            return 1
        plan, error = e.plan, str(e)
    if args.json:
        shown = _finite_or_named({k: v for k, v in plan.items() if k != "grid"})
        print(orjson.dumps(shown | {"error": error}, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    else:
        print(render_plan(plan))
        if error:
            print(f"\nthe plan cannot be built as specified:\n{error}", file=sys.stderr)
    return 1 if error else 0


def _cmd_propose(args) -> int:
    import orjson

    from corpusmix.mixing.propose import ProposalError, render, report
    from corpusmix.mixing.runs import RunsError, read_runs

    try:
        runs = read_runs(args.mixtures, args.losses, **({"mixture_prefix": args.mixture_prefix}
                                                        if args.mixture_prefix else {}))
        prior = caps = None
        if args.spec:
            from corpusmix.mixing.design import prior_and_caps
            from corpusmix.mixing.runs import over_sources
            from corpusmix.mixture.plan import availability

            loaded = load_spec(args.spec)
            runs = over_sources(runs, loaded.source_names, {}, args.mixtures)
            prior, caps = prior_and_caps(loaded, availability(loaded, raw_estimate=True))
        rep = report(runs, args.target, args.regressor, prior, caps, kl=args.kl, seed=args.seed)
    except (RunsError, ProposalError, SpecError) as e:
        print(f"cannot propose: {e}", file=sys.stderr)
        return 2
    print(orjson.dumps(rep, option=orjson.OPT_INDENT_2).decode() if args.json else render(rep))
    return 0


def _proxy_spec(spec: str):
    """The built spec a proxy command reads, or None after saying why not (PyTorch missing, a bad spec)."""
    try:
        import torch  # noqa: F401 - the proxy trainer's one dependency beyond the build's
    except ImportError:
        print("the proxy trainer needs PyTorch: pip install 'corpusmix[proxies]' (or torch)", file=sys.stderr)
        return None
    return _load_built(spec)


def _cmd_train_proxy(args) -> int:
    loaded = _proxy_spec(args.spec)
    if loaded is None:
        return 2
    from corpusmix.proxies.runs import train_config
    from corpusmix.proxies.train import CheckpointError, TrainConfig, heldout_stores, shards_dir, train_proxy

    cfg, _ = train_config(loaded, preset=args.preset, seq_len=args.seq_len, batch=args.batch, lr=args.lr,
                          seed=args.seed, eval_tokens=args.eval_tokens, threads=args.threads, device=args.device)
    cfg = TrainConfig(**{**cfg.__dict__, "steps": args.steps})  # the whole shards unless told
    out = Path(args.out) if args.out else loaded.storage_root / "proxy_train" / f"{cfg.preset}-seed{cfg.seed}"
    log = loaded.resolve(loaded.spec.monitor.log) if loaded.spec.monitor.log else None
    try:
        result = train_proxy(shards_dir(loaded), heldout_stores(loaded), out, cfg, progress=print,
                             stop_after=args.stop_after, monitor_log=log)
    except (FileNotFoundError, CheckpointError, ValueError) as e:
        print(f"cannot train: {e}", file=sys.stderr)
        return 2
    if log is not None:
        print(f"per-source loss: {log}")
    print(f"stopped at step {args.stop_after}: resume by running the same command" if not result
          else f"result: {out / 'train.json'} ({result['elapsed_s']:.1f} s)")
    return 0


def _cmd_next_phase(args) -> int:
    """Propose the next phase's weights from the run's monitor log, and say how to accept them."""
    loaded = _load_built(args.spec)
    if loaded is None:
        return 2
    from corpusmix.mixing.next_phase import NotYet, propose, render

    try:
        body = propose(loaded)
    except NotYet as e:
        print(f"no proposal yet: {e}")
        return 1
    except (FileNotFoundError, ValueError) as e:
        print(f"cannot propose: {e}", file=sys.stderr)
        return 2
    print(render(body))
    return 0


def _cmd_proxies(args) -> int:
    """Train a proxy per swarm mixture (resumable), after printing what it will cost."""
    loaded = _proxy_spec(args.spec)
    if loaded is None:
        return 2
    from corpusmix.proxies.runs import collect, run_dir, run_proxy, step_seconds, swarm_runs, train_config
    from corpusmix.proxies.train import RESULT

    try:
        runs = swarm_runs(loaded)[: args.runs]
    except FileNotFoundError as e:
        print(f"{e} (corpusmix build {args.spec})", file=sys.stderr)
        return 2
    cfg, budget = train_config(loaded, budget=args.budget, preset=args.preset, seq_len=args.seq_len,
                               batch=args.batch, lr=args.lr, seed=args.seed, eval_tokens=args.eval_tokens,
                               threads=args.threads, device=args.device)
    steps = cfg.steps
    names, weights = [n for n, _ in runs], [w for _, w in runs]
    todo = [i for i, n in enumerate(names) if not (run_dir(loaded, n) / "train" / RESULT).is_file()]
    print(f"{len(runs)} proxy runs of {budget:,} tokens ({steps} steps of {cfg.batch} x {cfg.seq_len}, "
          f"{cfg.preset}), {len(runs) - len(todo)} already done")
    if todo:
        per_step, eval_s = step_seconds(loaded, names[todo[0]], weights[todo[0]], budget, cfg)
        print(f"estimate: {per_step:.2f} s a step and {eval_s:.1f} s of evaluation a run (measured on the first run "
              f"to do) -> about {(per_step * steps + eval_s) * len(todo) / 60:.1f} min for the {len(todo)} run(s)")
    if args.estimate:
        return 0
    for i in todo:
        print(f"run {names[i]}: " + ", ".join(f"{s} {w:.3f}" for s, w in weights[i].items()))
        run_proxy(loaded, names[i], weights[i], budget, cfg, progress=print)
        collect(loaded)  # the tables grow as runs finish
    mixtures, losses, n = collect(loaded)
    print(f"{n} finished run(s): {mixtures} and {losses}; fit laws on them with\n"
          f"mixing:\n  runs: {{mixtures: {mixtures}, losses: {losses}, mixture_prefix: train_, "
          f"loss_prefix: val_loss_, loss_suffix: \"\"}}")
    return 0


def _load_built(spec: str):
    """The spec of a build to read (its source globs need not match any more), or None after
    printing why it cannot be read."""
    try:
        return load_spec(spec, check_files=False)
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return None


def _print_rows(rows: list[dict], as_json: bool) -> None:
    import orjson

    if as_json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2, default=str).decode())
        return
    if not rows:
        print("(no rows)")
        return
    cols = list(rows[0])
    cells = [[str(r[c]) if r[c] is not None else "" for c in cols] for r in rows]
    widths = [min(60, max(len(c), *(len(x[i]) for x in cells))) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for x in cells:
        print("  ".join(v[:w].ljust(w) for v, w in zip(x, widths)))


def _cmd_audit(args) -> int:
    from corpusmix.ops import audit

    loaded = _load_built(args.spec)
    if loaded is None:
        return 2
    con = audit.connect(loaded)
    if args.what == "why":
        rows = audit.why(con, args.doc_id, args.source)
        if not rows:
            print(f"{args.doc_id!r} is in no table of this build: not in the inputs, or its id differs "
                  "(ids are the source's own, else sha1: + the text's sha1)", file=sys.stderr)
            return 1
        if not args.json:
            print(audit.render_why(rows))
            return 0
    elif args.what == "where":
        rows = audit.where(con, args.doc_id, loaded.spec.mixture.seq_len, args.source)
        if not rows:
            print(f"{args.doc_id!r} is not in the mixed shards (see `corpusmix audit SPEC why {args.doc_id}`)",
                  file=sys.stderr)
            return 1
    elif args.what == "diff":
        import orjson

        print(orjson.dumps(audit.diff(loaded, Path(args.old_manifests)), option=orjson.OPT_INDENT_2).decode())
        return 0
    else:
        try:
            cur = con.execute(args.query)
        except Exception as e:  # noqa: BLE001 - DuckDB's message names the table or column
            print(f"query failed: {e}", file=sys.stderr)
            return 2
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
    _print_rows(rows, args.json)
    return 0


def _cmd_report(args) -> int:
    from corpusmix.ops.report import build_report

    loaded = _load_built(args.spec)
    if loaded is None:
        return 2
    print(build_report(loaded), end="")
    return 0


def _cmd_stages(args) -> int:
    from corpusmix.pipeline import STAGES

    spec = load_spec(args.spec, check_files=False).spec if args.spec else None
    for s in STAGES:
        if spec is not None and not s.is_active(spec):
            print(f"{s.name:20} {'per source' if s.per_source else 'global':10} not in this spec's build (nothing to do)")
            continue
        reads = ", ".join(s.deps(spec)) if spec is not None or not callable(s.upstream) else "(depends on the spec)"
        print(f"{s.name:20} {'per source' if s.per_source else 'global':10} reads: {reads or '(files the spec names)'}")
        print(f"{'':20} code version {s.code_version()}: {', '.join(s.code_modules())}")
    return 0


def examples(*lines: str) -> str:
    """An epilog of example command lines (shown verbatim by ``RawDescriptionHelpFormatter``)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


RAW = argparse.RawDescriptionHelpFormatter


def para(text: str) -> str:
    """A description paragraph, wrapped here because ``RAW`` keeps text as written."""
    return textwrap.fill(text, 88)


class _SqlHelp(argparse.Action):
    """``audit sql --help``: the usual help plus every view and its columns, read from the code
    that defines the views (``corpusmix.ops.audit.view_columns``); imported only when asked, so
    the other commands do not pay for DuckDB."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from corpusmix.ops.audit import views_help

        parser.epilog = f"views (columns below each):\n{views_help()}\n\n{parser.epilog}"
        parser.print_help()
        parser.exit()


def _proxy_options(p) -> None:
    """The proxy model's options, each defaulting to the spec's mixing.proxy."""
    p.add_argument("--preset", choices=["tiny", "small", "base", "large"],
                   help="model size: 0.44M, 1.8M, 7.4M, 19M parameters without embeddings (these options default "
                        "to the spec's mixing.proxy)")
    p.add_argument("--seq-len", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-tokens", type=int, help="held-out tokens evaluated per source")
    p.add_argument("--threads", type=int, help="CPU threads (fixed: part of what makes a run repeatable)")
    p.add_argument("--device", help="cpu, or cuda where present")


def make_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    spec = "specs/shared-corpus.yaml"
    parser = argparse.ArgumentParser(
        prog="corpusmix", description="Declarative, versioned LLM corpus builds.", formatter_class=RAW,
        epilog=examples("corpusmix init corpus.yaml            # a commented example spec",
                        f"corpusmix validate {spec}", f"corpusmix plan {spec}      # works before any build",
                        f"corpusmix build {spec}", f"corpusmix verify {spec}",
                        f"corpusmix audit {spec} why c4-olmo-00028",
                        "corpusmix COMMAND --help                # each command's options and examples"))
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init", help="write a commented example spec", formatter_class=RAW,
                       epilog=examples("corpusmix init                # writes corpus.yaml",
                                       "corpusmix init my.yaml --force"))
    p.add_argument("path", nargs="?", default="corpus.yaml")
    p.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    p.set_defaults(fn=_cmd_init)
    p = sub.add_parser("validate", help="check a spec; prints every problem with field, line and fix",
                       formatter_class=RAW, epilog=examples(f"corpusmix validate {spec}"))
    p.add_argument("spec")
    p.set_defaults(fn=_cmd_validate)
    p = sub.add_parser("verify", help="recompute every checksum and row count against the manifests; "
                                      "every stage must be built", formatter_class=RAW,
                       epilog=examples(f"corpusmix verify {spec}",
                                       f"corpusmix verify {spec} --until quality   # a build stopped after quality"))
    p.add_argument("spec")
    p.add_argument("--until", metavar="STAGE", help="expect the stages only up to this one (a partial build)")
    p.set_defaults(fn=_cmd_verify)
    p = sub.add_parser("plan", help="print the mixture plan (allocations, epochs, quotas per phase); builds nothing",
                       formatter_class=RAW,
                       description=para("The mixture plan. After a build it uses the exact token counts of tokenize "
                                   "(else the latest stage's count); before any build, an estimate from the raw "
                                   "input files, and says so."),
                       epilog=examples(f"corpusmix plan {spec}", f"corpusmix plan {spec} --json | jq .per_source"))
    p.add_argument("spec")
    p.add_argument("--json", action="store_true", help="the plan as JSON instead of tables")
    p.set_defaults(fn=_cmd_plan)
    p = sub.add_parser("audit", help="why was a document dropped, where is it, what changed, or SQL (DuckDB)",
                       formatter_class=RAW,
                       epilog=examples(f"corpusmix audit {spec} why c4-olmo-00028",
                                       f"corpusmix audit {spec} --json why c4-olmo-00028 --source web",
                                       f"corpusmix audit {spec} where gsm8k-train-00000",
                                       f"corpusmix audit {spec} diff /tmp/old/manifests/shared-corpus",
                                       f"corpusmix audit {spec} sql \"SELECT source, count(*) FROM rejections "
                                       "GROUP BY ALL\"",
                                       f"corpusmix audit {spec} sql --help   # the views and their columns"))
    p.add_argument("spec")
    p.add_argument("--json", action="store_true", help="rows as JSON (put it before the verb)")
    what = p.add_subparsers(dest="what", required=True)
    w = what.add_parser("why", help="every stage that dropped (or kept) a document, with the reason and values",
                        formatter_class=RAW,
                        description=para("Every stage that dropped (or kept) a document. A quality rejection lists "
                                    "every failed rule as 'rule: value vs threshold' (the thresholds the build "
                                    "used), then the values of the rules it passed."),
                        epilog=examples(f"corpusmix audit {spec} why c4-olmo-00028",
                                        f"corpusmix audit {spec} --json why c4-olmo-00028 --source web"))
    w.add_argument("doc_id")
    w.add_argument("--source", help="only this source (a document id can repeat across sources)")
    w = what.add_parser("where", help="the shards, sequences and samples that hold a document's tokens",
                        formatter_class=RAW, epilog=examples(f"corpusmix audit {spec} where gsm8k-train-00000"))
    w.add_argument("doc_id")
    w.add_argument("--source", help="only this source")
    w = what.add_parser("diff", help="changes against another version's manifests (e.g. a git checkout of them)",
                        formatter_class=RAW,
                        epilog=examples("git worktree add /tmp/old HEAD~5",
                                        f"corpusmix audit {spec} diff /tmp/old/manifests/shared-corpus"))
    w.add_argument("old_manifests")
    w = what.add_parser("sql", help="a DuckDB query over the build's views (--help lists them with their columns)",
                        formatter_class=RAW, add_help=False,
                        epilog=examples(f"corpusmix audit {spec} sql \"SELECT * FROM rules WHERE source = 'web'\"",
                                        f"corpusmix audit {spec} --json sql \"SELECT failed_rules, count(*) AS n "
                                        "FROM rejections GROUP BY ALL ORDER BY n DESC\""))
    w.add_argument("-h", "--help", action=_SqlHelp, help="show this help, the views and their columns, and exit")
    w.add_argument("query")
    p.set_defaults(fn=_cmd_audit)
    p = sub.add_parser("propose", help="fit mixing laws to proxy runs and propose a mixture, against the "
                                       "baselines; builds nothing", formatter_class=RAW,
                       epilog="examples:\n  corpusmix propose ../shared/mixing-laws/regmix/train_mixture_1m.csv "
                              "../shared/mixing-laws/regmix/train_pile_loss_1m.csv --target pile_cc\n"
                              "  corpusmix propose runs.parquet losses.parquet --spec specs/shared-corpus.yaml "
                              "--mixture-prefix w_ --json")
    p.add_argument("mixtures", help="CSV/Parquet: index and one weight column per domain")
    p.add_argument("losses", help="CSV/Parquet: index and one loss column per evaluated domain")
    p.add_argument("--spec", help="take the prior (natural token shares) and the repetition caps from this spec")
    p.add_argument("--target", action="append", help="a target domain of the objective (repeat; default: all)")
    p.add_argument("--regressor", default="log_linear", choices=["log_linear", "ridge", "lightgbm"])
    p.add_argument("--kl", type=float, default=0.1,
                   help="the convex proposer's pull to the prior (0: the law's optimum)")
    p.add_argument("--mixture-prefix", help="prefix of the weight columns (default RegMix's train_the_pile_)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_propose)
    p = sub.add_parser("train-proxy", help="train a small proxy model on the built mixed shards; held-out loss per "
                                           "source", formatter_class=RAW,
                       epilog=examples(f"corpusmix train-proxy {spec} --preset tiny --steps 200",
                                       f"corpusmix train-proxy {spec} --preset small --seq-len 512 --seed 1"))
    p.add_argument("spec")
    _proxy_options(p)
    p.add_argument("--steps", type=int, help="default: every sample of the shards once")
    p.add_argument("--out", help="run directory (checkpoint, train.json); default <storage>/proxy_train/<preset>-seed<N>; "
                                 "a run started again there resumes from its checkpoint")
    p.add_argument("--stop-after", type=int, help="stop (checkpointed) after this many steps, e.g. at a phase "
                                                  "boundary; per-source loss goes to monitor.log when the spec sets it")
    p.set_defaults(fn=_cmd_train_proxy)
    p = sub.add_parser("next-phase", help="propose the next phase's weights from the training run's per-source loss "
                                          "(monitor.log) at a restart point; changes nothing", formatter_class=RAW,
                       epilog=examples(f"corpusmix next-phase {spec}"))
    p.add_argument("spec")
    p.set_defaults(fn=_cmd_next_phase)
    p = sub.add_parser("proxies", help="train a proxy on each swarm mixture (swarm_design), resumably; the runs "
                                       "tables for mixing.runs", formatter_class=RAW,
                       epilog=examples(f"corpusmix proxies {spec} --estimate",
                                       f"corpusmix proxies {spec} --budget 262144 --runs 24"))
    p.add_argument("spec")
    p.add_argument("--budget", type=int, help="tokens per proxy run (at most the spec's budget)")
    p.add_argument("--runs", type=int, help="the first N mixtures of the swarm (default: all)")
    _proxy_options(p)
    p.add_argument("--estimate", action="store_true", help="print the measured time estimate and stop")
    p.set_defaults(fn=_cmd_proxies)
    p = sub.add_parser("report", help="a markdown report of the build (funnels, estimate check, plan, mixture)",
                       formatter_class=RAW, epilog=examples(f"corpusmix report {spec} > REPORT.md"))
    p.add_argument("spec")
    p.set_defaults(fn=_cmd_report)
    p = sub.add_parser("stages", help="the build's stages in order: scope, what each reads, its code version",
                       formatter_class=RAW, epilog=examples("corpusmix stages", f"corpusmix stages {spec}"))
    p.add_argument("spec", nargs="?", help="resolve spec-dependent inputs (a trained tokenizer reads quality)")
    p.set_defaults(fn=_cmd_stages)
    return parser, sub


def main(argv: list[str] | None = None, extend=None) -> int:
    """Run a command; ``extend(subparsers)`` adds more (the Dagster layer adds build and demo)."""
    parser, sub = make_parser()
    if extend is not None:
        extend(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
