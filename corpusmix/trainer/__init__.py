"""What a trainer imports to read the mixed shards: a numpy reader and a PyTorch dataset."""
