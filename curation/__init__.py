"""Corpus curation on Ray: read -> clean -> dedup -> language filter -> PII redaction -> write + report."""

__all__ = ["__version__"]
__version__ = "0.1.0"

# Curation's output contract, public to the later stages: where a curation output's training shards and its
# held-out split are, and whether the run that wrote it finished (``_SUCCESS``). Everything else in the package
# is its own business.
from curation.layout import (
    DATA_DIR,
    HELDOUT_DIR,
    IncompleteOutputError,
    curated_data_dir,
    curated_heldout_dir,
    require_complete,
)

__all__ += ["DATA_DIR", "HELDOUT_DIR", "IncompleteOutputError", "curated_data_dir", "curated_heldout_dir",
            "require_complete"]
