"""Exceptions with one-line messages that name the offending file or value."""

from __future__ import annotations


class DualpatchError(Exception):
    """Base class: the CLI prints these as a single line and exits non-zero."""


class DataError(DualpatchError):
    """An image, mask, folder or archive is unusable."""


class ModelFileError(DualpatchError):
    """A saved model is missing, tampered with, truncated or from another version."""


class WeightsError(DualpatchError):
    """Backbone weights cannot be found or do not match the architecture."""


class ConfigError(DualpatchError):
    """An option or config key is unknown or has an invalid value."""
