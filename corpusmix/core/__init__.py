"""What every stage shares: the spec, manifests, atomic storage, executors, hashing, Parquet and
Megatron file formats, and the stage contract with its runner."""
