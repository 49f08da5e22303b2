"""Choosing the mixture from evidence: proxy-run results (``runs``), mixing laws fitted to them (``laws``)."""
