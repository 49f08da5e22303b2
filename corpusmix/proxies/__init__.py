"""Proxy models: small language models trained on candidate mixtures to measure what a mixture does."""
