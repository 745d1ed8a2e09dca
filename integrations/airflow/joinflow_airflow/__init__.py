"""Airflow adapter for joinflow.

Not built yet: this package is a placeholder for the adapter that will turn a
joinflow pipeline into Airflow objects. It provides no functionality.
"""

__all__ = []
