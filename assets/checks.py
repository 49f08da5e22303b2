"""The check every stage asset reports with its materialization (``check_specs`` on the asset).

One check per stage, ``outputs_valid``, holds the stage's contract: its outputs are intact and
well-formed (an ERROR, blocking: a failure stops what depends on the asset in the same run) and, for
a document stage, its acceptance rates did not drift (a WARN, not blocking). One check rather than
three: every check result costs a Dagster step three stored events (planned, output, evaluation),
which were a tenth of a build's time on the dev corpus. The logic is in ``corpusmix.ops.checks``.
"""

import warnings
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    PreviewWarning,
)

from corpusmix.core.manifest import manifest_path, read_manifest
from corpusmix.core.spec import LoadedSpec
from corpusmix.ops import checks

CHECK = "outputs_valid"
DESCRIPTION = ("Every output is on disk with the size, sha256 and rows its manifest records, every table passes its "
               "pandera schema and token stores are valid Megatron indexes (a failure is an ERROR and stops what "
               "depends on the asset in the run)")
DRIFT = ("; the document and token acceptance rates moved at most checks.drift_threshold since the partition's "
         "previous materialization (a WARN only)")


def stage_check_specs(asset: str, rates: bool = True, partitions: PartitionsDefinition | None = None,
                      ) -> list[AssetCheckSpec]:
    """The check every stage has; partitioned like the asset, so each result names its source
    (without ``partitions`` the UI shows "Partition —" for every source's check). Partitioned
    checks are a Dagster preview feature (1.13): its warning, once per spec, is silenced here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return [AssetCheckSpec(CHECK, asset=AssetKey(asset), blocking=True, partitions_def=partitions,
                               description=DESCRIPTION + (DRIFT if rates else "") + ".")]


def previous_manifest(loaded: LoadedSpec, asset: str, partition: str | None) -> dict | None:
    """The manifest before this materialization (read it before the stage overwrites it)."""
    path = manifest_path(loaded.manifest_root, asset, partition)
    try:
        return read_manifest(path) if path.is_file() else None
    except Exception:  # noqa: BLE001 - an unreadable old manifest has no rates to compare
        return None


def stage_result(loaded: LoadedSpec, manifest: dict, manifest_file: Path, metadata: dict, previous: dict | None = None,
                 rates: bool = True, extra_checks: tuple = ()) -> MaterializeResult:
    """What every stage asset returns: its metadata, its content key as the data version, its checks."""
    return MaterializeResult(metadata=metadata, data_version=DataVersion(manifest["version"]),
                             check_results=[*stage_check_results(loaded, manifest, manifest_file, previous, rates),
                                            *extra_checks])


def stage_check_results(loaded: LoadedSpec, manifest: dict, manifest_file: Path, previous: dict | None,
                        rates: bool = True) -> list[AssetCheckResult]:
    """``outputs_valid``: failed at ERROR on any integrity or schema problem, at WARN on drift alone.
    A passing result shows what it verified and, for rates, the largest move (its margin)."""
    broken = checks.integrity_problems(loaded, manifest_file)
    malformed = checks.schema_problems(loaded, manifest)
    metadata = {"outputs_verified": len(manifest["outputs"]),
                "integrity_problems": MetadataValue.json(broken[:50]),
                "schema_problems": MetadataValue.json(malformed[:50])}
    moved = {}
    if rates:
        threshold = loaded.spec.checks.drift_threshold
        moved = checks.drift(previous, manifest, threshold)
        changes = checks.rate_changes(previous, manifest)
        metadata |= {"rates_moved_over_threshold": MetadataValue.json(moved),
                     "largest_rate_change": f"{max(changes.values(), key=abs):+.4f} (threshold {threshold:g})"
                     if changes else "no previous materialization to compare",
                     "previous_rates": MetadataValue.json(previous["rates"] if previous else None),
                     "current_rates": MetadataValue.json(manifest["rates"])}
    severity = AssetCheckSeverity.ERROR if broken or malformed else AssetCheckSeverity.WARN
    return [AssetCheckResult(check_name=CHECK, passed=not (broken or malformed or moved), severity=severity,
                             metadata=metadata)]
