"""Schema of a manifest: the JSON record every materialization writes.

A manifest says what went in (inputs with checksums and the upstream
manifest), what came out (paths relative to the storage root, checksums,
sizes, documents, tokens), the counts and rates of the stage, and the code,
spec and tool versions that made it. ``content_hash`` covers everything but
the timestamps, so two builds of the same inputs hash the same.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputRef(_M):
    path: str = Field(description="Input path, relative to its source glob's base directory")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    upstream_manifest: str | None = None


class OutputRef(_M):
    path: str = Field(description="Output path, relative to the storage root")
    kind: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    rows: int = Field(ge=0)
    tokens: int = Field(ge=0)


class Manifest(_M):
    manifest_version: int = 1
    corpus: str
    asset: str
    partition: str | None
    version: str = Field(description="Content key of the outputs: inputs + stage config + code version")
    spec_hash: str
    stage_config_hash: str
    code_version: str
    inputs: list[InputRef]
    outputs: list[OutputRef]
    counts: dict[str, int]
    rates: dict[str, float | None]
    token_counting: dict[str, Any]
    reasons: dict[str, dict[str, int]] = Field(description="Per reason: records, bytes, tokens removed")
    skipped_files: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    timing: dict[str, float] = Field({}, description="Throughput figures; excluded from content_hash")
    tool_versions: dict[str, str]
    started_at: str
    finished_at: str
    elapsed_s: float
    content_hash: str = Field(pattern=r"^[0-9a-f]{64}$")


def validate_manifest(data: dict) -> Manifest:
    """Parse and validate manifest JSON; raises pydantic.ValidationError naming the bad field."""
    return Manifest.model_validate(data)
