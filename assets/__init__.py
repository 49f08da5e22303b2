"""Dagster assets: one per engine stage, made by one factory (``factory.stage_asset``). A stage's
module here holds only how it shows in the UI (``StageAsset``); stage logic lives in ``corpusmix``."""

from .decontaminate import DECONTAMINATE, EVAL_INDEX
from .dedup import CROSS_SOURCE_DEDUP, DEDUP
from .factory import StageAsset
from .handoff import MDS_SHARDS, MEGATRON_BLENDS
from .heldout import HELDOUT_SPLIT
from .ingest import INGEST
from .mixing import MIXING_FIT, MIXING_PROPOSAL, SWARM_DESIGN
from .mixture import MIXED_SHARDS, MIXTURE_PLAN
from .quality import QUALITY
from .tokenize import TOKENIZE, TOKENIZER
from .trace_validation import TRACE_VALIDATION

WIRING: dict[str, StageAsset] = {
    "ingest": INGEST, "trace_validation": TRACE_VALIDATION, "dedup": DEDUP, "cross_source_dedup": CROSS_SOURCE_DEDUP, "quality": QUALITY,
    "eval_index": EVAL_INDEX, "decontaminate": DECONTAMINATE,
    "heldout_split": HELDOUT_SPLIT,
    "tokenizer": TOKENIZER, "tokenize": TOKENIZE, "mixture_plan": MIXTURE_PLAN, "mixed_shards": MIXED_SHARDS,
    "megatron_blends": MEGATRON_BLENDS, "mds_shards": MDS_SHARDS,
    "swarm_design": SWARM_DESIGN, "mixing_fit": MIXING_FIT, "mixing_proposal": MIXING_PROPOSAL,
}


def wiring(stage) -> StageAsset:
    """A stage's UI wiring; a stage without any gets the standard funnel metadata and its module's summary."""
    import importlib

    if stage.name in WIRING:
        return WIRING[stage.name]
    doc = importlib.import_module(stage.module).__doc__ or stage.name
    return StageAsset(description=doc.strip().splitlines()[0])
