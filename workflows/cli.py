"""The installed ``corpusmix`` command: the engine's commands plus the two that drive Dagster.

``build`` materializes the spec's assets through Dagster (``workflows.build``);
``demo`` harvests a demo corpus from this Python installation and builds it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from corpusmix import cli
from corpusmix.core.spec import SpecError, load_spec

REPO = Path(__file__).resolve().parents[1]
DEMO_SPEC = REPO / "specs" / "demo.yaml"


def _cmd_build(args) -> int:
    from workflows.build import BuildInterrupted, run_build

    try:
        ok = run_build(args.spec, args.source or None)
    except SpecError as e:
        print(f"{len(e.issues)} problem(s) in {e.file}:\n{e}", file=sys.stderr)
        return 2
    except BuildInterrupted as e:
        print(f"corpusmix build: {e}", file=sys.stderr)
        return 128 + e.signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them
    return 0 if ok else 1


def _cmd_demo(args) -> int:
    from corpusmix.ops.demo import harvest
    from corpusmix.ops.verify import verify
    from workflows.build import run_build

    loaded = load_spec(DEMO_SPEC, check_files=False)
    raw = loaded.storage_root / "raw"
    print(f"harvesting a demo corpus from this Python installation into {raw} ...")
    harvest(raw)
    ok = run_build(DEMO_SPEC)
    problems = verify(str(DEMO_SPEC))
    print()
    print(f"spec:       {DEMO_SPEC}")
    print(f"outputs:    {loaded.storage_root}")
    print(f"manifests:  {loaded.manifest_root}")
    print(f"verify:     {'ok' if not problems else problems}")
    print("UI:         make ui   (dagster dev on http://127.0.0.1:3000, same DAGSTER_HOME: the runs above are there)")
    return 0 if ok and not problems else 1


def _dagster_commands(sub) -> None:
    spec = "specs/shared-corpus.yaml"
    p = sub.add_parser("build", help="materialize the spec's assets through Dagster (no UI)",
                       formatter_class=cli.RAW,
                       epilog=cli.examples(f"corpusmix build {spec}",
                                           f"corpusmix build {spec} --source web --source code   # two sources",
                                           f"corpusmix verify {spec}                            # then check it"))
    p.add_argument("spec")
    p.add_argument("--source", action="append", help="only this source (repeatable)")
    p.set_defaults(fn=_cmd_build)
    p = sub.add_parser("demo", help="harvest a demo corpus from this Python and build it", formatter_class=cli.RAW,
                       epilog=cli.examples("corpusmix demo", "make ui        # then look at the runs in Dagster"))
    p.set_defaults(fn=_cmd_demo)


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, extend=_dagster_commands)


if __name__ == "__main__":
    sys.exit(main())
