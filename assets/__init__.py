"""Dagster assets: one module per stage. Each asset only wires an engine call,
its partition, and the metadata the UI shows; stage logic lives in ``corpusmix``."""
