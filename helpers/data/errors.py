"""The two ways the data helpers report trouble: an error that stops, a warning that goes on."""

from __future__ import annotations


class DataError(ValueError):
    """The data folder or one of its files is not what the loader expects."""


class DataWarning(UserWarning):
    """Something in the data was skipped or looks wrong, but loading went on."""
