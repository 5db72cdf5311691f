"""Launchers: the whole chain as one command (``python -m launch.pipeline``)."""
