"""Streaming export of a run's embeddings, one partition at a time."""

from bigembed.export.writers import FORMATS, export_run

__all__ = ["FORMATS", "export_run"]
