"""The checks every stage asset reports with its materialization (``check_specs`` on the asset).

integrity and schema are blocking errors: a failure stops what depends on the asset in the
same run. Acceptance drift is a warning. The logic is in ``corpusmix.ops.checks``.
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

INTEGRITY, SCHEMA, DRIFT = "outputs_match_manifest", "schema", "acceptance_drift"


def stage_check_specs(asset: str, rates: bool = True, partitions: PartitionsDefinition | None = None,
                      ) -> list[AssetCheckSpec]:
    """The checks every stage has; partitioned like the asset, so each result names its source
    (without ``partitions`` the UI shows "Partition —" for every source's check). Partitioned
    checks are a Dagster preview feature (1.13): its warning, once per spec, is silenced here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return _check_specs(asset, rates, partitions)


def _check_specs(asset: str, rates: bool, partitions: PartitionsDefinition | None) -> list[AssetCheckSpec]:
    specs = [AssetCheckSpec(INTEGRITY, asset=AssetKey(asset), blocking=True, partitions_def=partitions,
                            description="Every output is on disk with the size, sha256 and rows its manifest records."),
             AssetCheckSpec(SCHEMA, asset=AssetKey(asset), blocking=True, partitions_def=partitions,
                            description="Every table output passes its pandera schema; token stores are valid "
                                        "Megatron indexes.")]
    if rates:
        specs.append(AssetCheckSpec(DRIFT, asset=AssetKey(asset), partitions_def=partitions,
                                    description="Acceptance rates against the previous materialization of the same "
                                                "partition (warns above checks.drift_threshold)."))
    return specs


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
    bad = checks.integrity_problems(loaded, manifest_file)
    results = [AssetCheckResult(check_name=INTEGRITY, passed=not bad, severity=AssetCheckSeverity.ERROR,
                                metadata={"problems": MetadataValue.json(bad[:50])})]
    bad = checks.schema_problems(loaded, manifest)
    results.append(AssetCheckResult(check_name=SCHEMA, passed=not bad, severity=AssetCheckSeverity.ERROR,
                                    metadata={"problems": MetadataValue.json(bad[:50])}))
    if rates:
        threshold = loaded.spec.checks.drift_threshold
        moved = checks.drift(previous, manifest, threshold)
        results.append(AssetCheckResult(
            check_name=DRIFT, passed=not moved, severity=AssetCheckSeverity.WARN,
            metadata={"moved": MetadataValue.json(moved), "threshold": threshold,
                      "previous": MetadataValue.json(previous["rates"] if previous else None),
                      "current": MetadataValue.json(manifest["rates"])}))
    return results
