"""Dagster adapter for joinflow.

Not built yet: this package is a placeholder for the adapter that will turn a
joinflow pipeline into Dagster objects. It provides no functionality.
"""

__all__ = []
