"""The per-source and global stages that turn raw files into token stores, one module per stage
(and the helpers only it uses: readers for ingest, MinHash for dedup, rules for quality)."""
