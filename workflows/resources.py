"""Resources: the corpus spec every asset reads."""

from dagster import ConfigurableResource

from corpusmix.spec import LoadedSpec, load_spec


class CorpusSpec(ConfigurableResource):
    """Path of the corpus spec YAML; loaded (and fully validated) at the start of each step."""

    spec_path: str

    def load(self) -> LoadedSpec:
        return load_spec(self.spec_path)
