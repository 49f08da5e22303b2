"""corpusmix engine: plain-Python stage logic for building LLM pretraining corpora.

Nothing in this package imports Dagster; the orchestration layer lives in the
top-level ``assets`` and ``workflows`` packages and only wires these functions.
"""

__version__ = "0.1.0"
