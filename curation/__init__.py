"""Corpus curation on Ray Data: read -> clean -> dedup -> language filter -> PII redaction -> write + report."""

__all__ = ["__version__"]
__version__ = "0.1.0"
