"""SQL text for DuckDB where a statement cannot take parameters (views, table functions over
file lists, settings): one way to write a string literal, so a quote in a path never breaks a build."""

from __future__ import annotations


def literal(text: str) -> str:
    """``text`` as a SQL string literal (single quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"


def literals(texts) -> str:
    """Comma-separated literals, e.g. the file list of ``read_parquet([...])``."""
    return ", ".join(literal(str(t)) for t in texts)
