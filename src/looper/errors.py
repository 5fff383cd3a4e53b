"""The errors a user's input raises: the CLI prints their one line and exits non-zero (``entrypoint.run_or_fail``).
``config.ConfigError`` is the config schema's own."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (a file, a line, a field); the CLI prints it and exits non-zero."""


class ConfigValueError(InputError):
    """A config field's value that a stage refuses: a combination the schema cannot see, or one this machine cannot
    run. The message starts with the field (``eval.datasets: ...``); the CLI puts the config file in front of it, as
    it does for the schema's own errors, with the command-line overrides that set ``fields``: the dotted config
    fields whose values it refuses (``("data.path", "data.source")``)."""

    def __init__(self, message: str, *, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields
