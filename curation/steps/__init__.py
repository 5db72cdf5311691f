"""Curation steps. Each module holds a pure text function, a frozen config and a batch function."""
