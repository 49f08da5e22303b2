"""Resources: the corpus spec every asset reads, and where its shard-level work runs."""

from typing import Optional

from dagster import ConfigurableResource
from pydantic import Field, ValidationError

from corpusmix.core.spec import LoadedSpec, load_spec, with_execution


class CorpusSpec(ConfigurableResource):
    """Path of the corpus spec YAML; loaded (and fully validated) at the start of each step.

    ``backend``, ``workers`` and ``ray_address`` override the spec's ``execution``
    section for a run (Launchpad: ``resources: corpus: config: {backend: ray,
    ray_address: "ray-head:6379"}``), so one spec builds on a laptop or a cluster.
    They never change an output, only where the work runs.
    """

    spec_path: str
    backend: Optional[str] = Field(
        default=None, description="Override execution.backend: inline, processes or ray.")
    workers: Optional[int] = Field(default=None, description="Override execution.workers.")
    ray_address: Optional[str] = Field(default=None, description="Override execution.ray_address.")

    def load(self) -> LoadedSpec:
        overrides = {k: v for k, v in (("backend", self.backend), ("workers", self.workers),
                                       ("ray_address", self.ray_address)) if v is not None}
        try:
            return with_execution(load_spec(self.spec_path), overrides)
        except ValidationError as e:
            bad = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise ValueError(f"resource 'corpus' execution override {overrides}: {bad}") from None
