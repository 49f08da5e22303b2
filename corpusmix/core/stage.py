"""The stage contract, and the one runner that gives every stage the same skeleton.

A stage declares once (``Stage``): its name, whether it runs per source or once
over all sources, the stages it reads, how its spec section becomes its
configuration, the function that fills a staging directory, and the module
whose code its version covers. ``run`` does the rest, the same way for every
stage: compute the content key, skip when the current manifest already has it
and its outputs are intact, build into a staging directory, publish it under
the key, write the manifest last (the commit point), and report progress.

The content key of a stage's outputs hashes three things: its configuration,
what it reads (the versions of its upstream outputs, or input file checksums),
and its **code version**. The code version covers only the code that decides
the stage's bytes: the stage's module and everything it imports from the
engine and the schemas, followed transitively, but not through the
infrastructure modules listed in ``INFRASTRUCTURE`` (a spec default reaches
the key through the configuration; manifests, atomic storage, executors and
this runner write the same bytes whatever their code). Docstrings and
comments do not count: the digest is over the parsed code with docstrings
removed. Editing the report, the CLI or a benchmark changes no stage's key;
editing a quality rule changes quality's, and through the upstream versions
everything after it. A change the digest cannot see (a new library version
that changes an encoding, say) is declared by bumping ``Stage.version``.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import functools
import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from corpusmix.core.executor import Executor, open_executor
from corpusmix.core.manifest import (
    require_manifest,
    stage_manifest,
    up_to_date,
    utc_now,
    write_manifest,
)
from corpusmix.core.spec import LoadedSpec, Spec, canonical_hash
from corpusmix.core.storage import discard_dir, new_staging_dir, publish_dir

log = logging.getLogger("corpusmix.stage")

REPO = Path(__file__).resolve().parents[2]
ENGINE_PACKAGES = ("corpusmix", "schemas")
INFRASTRUCTURE = frozenset({
    "corpusmix.core.spec", "corpusmix.core.spec_checks", "corpusmix.core.manifest", "corpusmix.core.storage",
    "corpusmix.core.executor", "corpusmix.core.stage", "corpusmix.pipeline", "schemas.manifest",
})

Progress = Callable[[str], None]


@dataclass
class Built:
    """What a stage's build function hands back; the runner adds identity, paths and timing.

    ``outputs`` name files relative to the version directory; ``version`` is set only
    by a stage whose key could not be computed before reading its inputs (ingest).
    """

    inputs: list[dict]
    outputs: list[dict]
    counts: dict[str, int]
    rates: dict[str, float | None] = field(default_factory=dict)
    token_counting: dict = field(default_factory=lambda: {"method": "none"})
    reasons: dict[str, dict] = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    skipped_files: list[dict] = field(default_factory=list)
    summary: str = ""
    version: str | None = None

    def funnel_gaps(self) -> list[str]:
        """Where in - the reasons' sums != out (documents, and tokens where counted): every removed
        document is charged to exactly one reason, so a gap is a bug that would lose data silently."""
        gaps = []
        for unit, field_ in (("documents", "records"), ("tokens", "tokens")):
            n_in, n_out = self.counts.get(f"{unit}_in"), self.counts.get(f"{unit}_out")
            if n_in is None or n_out is None:
                continue
            removed = sum(r.get(field_, 0) for r in self.reasons.values())
            if n_in - removed != n_out:
                gaps.append(f"{unit}: {n_in:,} in - {removed:,} removed != {n_out:,} out")
        return gaps


@dataclass(frozen=True)
class Stage:
    """One stage of the build, declared once (see the module docstring).

    ``config(loaded, partition)`` is the part of the spec the outputs depend on.
    ``inputs(loaded, partition)``, when given, replaces the default identity of
    what the stage reads (the versions of its upstream outputs); returning None
    means "cannot be current without reading everything", and the build then
    sets ``Built.version`` itself. ``upstream`` may depend on the spec (a
    tokenizer read from a file needs no source). ``active(spec)``, when given,
    says whether the spec asks anything of the stage: one it does not (no eval
    sets, no held-out splits, no proxy runs to fit, MDS off) is left out of the
    build, the Dagster assets and the jobs, and the stages after it read what
    it would have passed on (their ``upstream`` says so): a step with nothing
    to do still costs a build its Dagster events (~0.2 s a step).
    """

    name: str
    scope: Literal["source", "global"]
    upstream: tuple[str, ...] | Callable[[Spec], tuple[str, ...]]
    config: Callable[[LoadedSpec, str | None], dict]
    build: Callable[[StageRun], Built]
    module: str
    version: int = 1
    inputs: Callable[[LoadedSpec, str | None], Any] | None = None
    active: Callable[[Spec], bool] | None = None

    @property
    def per_source(self) -> bool:
        return self.scope == "source"

    def is_active(self, spec: Spec) -> bool:
        return self.active is None or self.active(spec)

    def deps(self, spec: Spec) -> tuple[str, ...]:
        return self.upstream(spec) if callable(self.upstream) else self.upstream

    def code_version(self) -> str:
        """``name@version+digest`` of the code that decides this stage's outputs."""
        return f"{self.name}@{self.version}+{code_digest(self.module)}"

    def code_modules(self) -> tuple[str, ...]:
        return import_closure(self.module)


@dataclass
class StageRun:
    """Everything a build function needs, from the runner."""

    stage: Stage
    loaded: LoadedSpec
    partition: str | None
    config: dict
    version: str | None
    staging: Path
    progress: Progress
    registry: dict[str, Stage]
    shared_executor: Executor | None = None

    @property
    def label(self) -> str:
        return f"[{self.partition or self.stage.name}]"

    def say(self, message: str) -> None:
        """A progress line: ``[source] stage: message``, or ``[stage] message`` for a global stage."""
        self.progress(f"{self.label} {self.stage.name + ': ' if self.partition else ''}{message}")

    @contextlib.contextmanager
    def executor(self, units: int, multithreaded_units: bool = False) -> Iterator[Executor]:
        """The caller's shared executor if it gave one, else the spec's ``execution`` for ``units``."""
        if self.shared_executor is not None:
            yield self.shared_executor
            return
        with open_executor(self.loaded.spec.execution, units, shared=self.loaded.storage_root,
                           multithreaded_units=multithreaded_units) as ex:
            yield ex

    def upstream(self, name: str, partition: str | None = None) -> tuple[Path, dict]:
        """An upstream stage's manifest: this partition's for a per-source stage unless another is named."""
        stage = self.registry[name]
        part = (partition or self.partition) if stage.per_source else None
        return require_manifest(self.loaded.manifest_root, name, part)

    def key(self, identity: Any) -> str:
        """The content key for an input identity known only once the inputs are read (ingest)."""
        return content_key(self.stage, self.config, identity)


class StorageFullError(OSError):
    """The disk under the storage root filled while a stage wrote: say where, what, and the fix."""

    def __init__(self, stage: Stage, partition: str | None, loaded: LoadedSpec, cause: OSError):
        which = f"{stage.name}[{partition}]" if partition else stage.name
        where = f" (writing {cause.filename})" if cause.filename else ""
        free = shutil.disk_usage(loaded.storage_root) if loaded.storage_root.exists() else None
        super().__init__(cause.errno or errno.ENOSPC, (
            f"No space left on device: {which} could not write its outputs under storage.root "
            f"{loaded.storage_root}{where}; {free.free / 1e9:.2f} GB free there now. Nothing was published and "
            f"the previous build of {which} is intact. Fix: free space on that disk (df -h {loaded.storage_root}), or "
            f"point storage.root at a larger one, then build again" if free else
            f"No space left on device: {which} could not write under storage.root {loaded.storage_root}{where}"))


def content_key(stage: Stage, config: dict, identity: Any) -> str:
    """A stage's output version: its code version, its configuration, what it reads."""
    return canonical_hash({"code": stage.code_version(), "config": config, "upstream": identity})[:20]


def upstream_identity(stage: Stage, loaded: LoadedSpec, partition: str | None,
                      registry: dict[str, Stage]) -> list[str]:
    """The versions of everything the stage reads, in declared order: the same source's
    partition of a per-source upstream (every source's, for a global stage), or the global one."""
    versions = []
    for name in stage.deps(loaded.spec):
        up = registry[name]
        parts = ([partition] if stage.per_source else loaded.source_names) if up.per_source else [None]
        versions += [require_manifest(loaded.manifest_root, name, p)[1]["version"] for p in parts]
    return versions


def stage_key(stage: Stage, loaded: LoadedSpec, partition: str | None,
              registry: dict[str, Stage]) -> tuple[dict, str | None]:
    """(configuration, content key); the key is None when it cannot match without reading the inputs.
    Raises FileNotFoundError, naming what to build first, when an upstream manifest is missing."""
    config = stage.config(loaded, partition)
    identity = (stage.inputs(loaded, partition) if stage.inputs is not None
                else upstream_identity(stage, loaded, partition, registry))
    return config, None if identity is None else content_key(stage, config, identity)


def output_dir(stage: Stage, partition: str | None) -> str:
    """Where a stage's versions live, relative to the storage root."""
    return f"{stage.name}/{partition}" if partition else stage.name


def run(stage: Stage, loaded: LoadedSpec, partition: str | None, registry: dict[str, Stage],
        progress: Progress | None = None, executor: Executor | None = None) -> tuple[dict, Path]:
    """Build one stage (partition), or find it current; returns (manifest, manifest path)."""
    progress = progress or log.info
    if stage.per_source != (partition is not None):
        raise ValueError(f"stage {stage.name!r} runs {'per source' if stage.per_source else 'once'}: "
                         f"{'name a source' if stage.per_source else 'give no source'} (got {partition!r})")
    started, t0 = utc_now(), time.perf_counter()
    config, version = stage_key(stage, loaded, partition, registry)
    if version and (hit := up_to_date(loaded, stage.name, partition, version, progress)):
        return hit
    parent = loaded.storage_root / output_dir(stage, partition)
    staging = new_staging_dir(parent)
    ctx = StageRun(stage, loaded, partition, config, version, staging, progress, registry, executor)
    try:
        built = stage.build(ctx)
        if gaps := built.funnel_gaps():
            raise RuntimeError(f"stage {stage.name!r} ({partition or 'global'}): its funnel does not add up "
                               f"({'; '.join(gaps)}); this is a bug, please report it")
        version = built.version or version
        if version is None:
            raise RuntimeError(f"stage {stage.name!r} computed no content key")
        if not publish_dir(staging, parent / version):
            ctx.say(f"identical output already published at {parent / version} (content key match)")
    except OSError as e:
        discard_dir(staging)
        if e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(e):
            raise StorageFullError(stage, partition, loaded, e) from e
        raise
    except BaseException:
        discard_dir(staging)
        raise
    rel = f"{output_dir(stage, partition)}/{version}"
    elapsed = time.perf_counter() - t0
    timing = {k: round(v / max(elapsed, 1e-9), 2) for k, v in
              (("text_mb_per_s", built.counts.get("bytes_in", 0) / 1e6),
               ("tokens_per_s", built.counts.get("tokens_out", 0))) if v}
    manifest = stage_manifest(
        loaded=loaded, asset=stage.name, partition=partition, version=version, stage_cfg=config,
        code_version=stage.code_version(), started=started, t0=t0, timing=timing, inputs=built.inputs,
        outputs=[o | {"path": f"{rel}/{o['path']}"} for o in built.outputs], counts=built.counts,
        rates=built.rates, token_counting=built.token_counting, reasons=built.reasons,
        skipped_files=built.skipped_files, details=built.details)
    manifest, path = write_manifest(loaded.manifest_root, manifest)
    ctx.say(f"done: {built.summary}{'; ' if built.summary else ''}manifest {path}")
    return manifest, path


def is_current(stage: Stage, loaded: LoadedSpec, partition: str | None, registry: dict[str, Stage]) -> bool:
    """True when the stage (partition) would skip itself: same content key, outputs intact."""
    try:
        _, version = stage_key(stage, loaded, partition, registry)
    except Exception:  # noqa: BLE001 - an upstream manifest is missing, or an input the key reads is damaged
        return False  # (a flipped byte in the drop list): not current; building it repairs it, or says why
    return version is not None and up_to_date(loaded, stage.name, partition, version) is not None


# --------------------------------------------------------------------------- code versions

def _module_file(name: str) -> Path | None:
    """The source file of an engine module, or None for anything outside the engine."""
    if name.split(".")[0] not in ENGINE_PACKAGES:
        return None
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _statements(tree: ast.AST) -> Iterator[ast.AST]:
    """Every statement, nested ones included, without descending into expressions: imports and
    docstrings are statements, and skipping the expressions makes a module's scan ~5x cheaper."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for block in ("body", "orelse", "finalbody", "handlers", "cases"):
            todo.extend(getattr(node, block, ()))


@functools.lru_cache(maxsize=None)
def _scanned(name: str) -> tuple[frozenset[str], str]:
    """A module's engine imports (anywhere in it: function-level imports run too) and its code as
    normalised source, docstrings and comments gone; parsed once per module, though most modules
    are in several stages' closures."""
    path = _module_file(name)
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _statements(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for a in node.names:  # ``from pkg import module`` names the module, not the package
                found.add(f"{base}.{a.name}" if _module_file(f"{base}.{a.name}") else base)
        elif isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return frozenset(m for m in found if _module_file(m) is not None), ast.unparse(tree)


@functools.lru_cache(maxsize=None)
def import_closure(module: str) -> tuple[str, ...]:
    """``module`` and the engine modules it imports, transitively, stopping at INFRASTRUCTURE."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen or name in INFRASTRUCTURE:
            continue
        seen.add(name)
        todo.extend(_scanned(name)[0])
    return tuple(sorted(seen))


@functools.lru_cache(maxsize=None)
def code_digest(module: str) -> str:
    """12 hex digits over the code (without docstrings) of ``import_closure(module)``."""
    h = hashlib.sha256()
    for name in import_closure(module):
        h.update(name.encode() + b"\0" + _scanned(name)[1].encode() + b"\0")
    return h.hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def engine_digest() -> str:
    """Digest of every engine and schema source file, byte for byte: whether two machines run the
    same engine (the Ray node probe), which is stricter than any one stage's code version."""
    h = hashlib.sha256()
    for pkg in ENGINE_PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def documents_built(ctx: StageRun, upstream: tuple[Path, dict], doc_parts: list[dict],
                    tables: list[tuple[str, dict]], docs: tuple[int, int], text_bytes: tuple[int, int],
                    tokens: tuple[int, int], summary: str) -> Built:
    """What every stage that reads another stage's documents and writes a subset reports alike.

    ``doc_parts`` are the PartWriter's parts, ``tables`` (kind, write_parquet result) the
    stage's other outputs; ``docs``, ``text_bytes`` and ``tokens`` are (in, out), tokens the
    sums of the documents' ``n_tokens`` (counted as ingest's ``token_counting`` says). The
    caller adds its own counts, reasons, details.
    """
    from corpusmix.core.manifest import input_refs, output_ref

    up_path, up = upstream
    outputs = [output_ref(p, "documents", p["tokens"]) for p in doc_parts]
    outputs += [output_ref(out, kind) for kind, out in tables]
    (n_in, n_out), (b_in, b_out), (t_in, t_out) = docs, text_bytes, tokens
    return Built(
        inputs=input_refs(ctx.loaded, up_path, up), outputs=outputs,
        counts={"documents_in": n_in, "documents_out": n_out, "bytes_in": b_in, "bytes_out": b_out,
                "tokens_in": t_in, "tokens_out": t_out},
        rates={"document_acceptance": n_out / n_in if n_in else None,
               "token_acceptance": t_out / t_in if t_in else None},
        token_counting=up["token_counting"], summary=summary)
