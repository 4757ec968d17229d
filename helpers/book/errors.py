"""The runner's errors: each carries a message for the person building, and an exit status."""

from __future__ import annotations

from helpers import parameters


class BookError(Exception):
    """A build failure, with a message meant for the person running the build."""

    exit_code = 1


class ParameterError(BookError, parameters.ParameterError):
    """Bad parameters or chapter names: reported before any notebook runs (the runner's
    :class:`helpers.parameters.ParameterError`, with an exit status)."""

    exit_code = 2


class NotebookFailed(BookError):
    """A notebook raised; the message names the notebook and the failing cell."""


class RenderFailed(BookError):
    """jupyter-book reported warnings, broken references or errors."""
