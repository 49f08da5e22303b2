"""Schemas of every table a stage writes (pandera) and of a manifest (pydantic).

Stage code validates each batch against these before writing it, so a table
on disk has passed its schema; `corpusmix verify` and the Dagster asset
checks validate again from the files.
"""

from .manifest import Manifest, validate_manifest
from .tables import DUPLICATES, INGEST_DOCUMENTS, QUARANTINE, validate_table

__all__ = ["DUPLICATES", "INGEST_DOCUMENTS", "QUARANTINE", "Manifest", "validate_manifest", "validate_table"]
