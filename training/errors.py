"""Errors the command-line tools report as one clear line (no traceback) before exiting."""

from __future__ import annotations

from ccnet.checkpoint import CheckpointError
from ccnet.datasets import DatasetError

from .config import ConfigError


class RunFolderError(Exception):
    """The output folder cannot be used as asked (it holds another run, nothing to resume, ...)."""


class NonFiniteLossError(Exception):
    """Training produced NaN/inf; the message names the iteration and the last good saved state."""


class EvaluationError(Exception):
    """Evaluation cannot run as asked (e.g. checkpoint and dataset disagree on the classes)."""


class PretrainedError(ValueError):
    """The pretrained weights file is missing, or not the one the config expects."""


USER_ERRORS = (CheckpointError, ConfigError, DatasetError, RunFolderError, EvaluationError, PretrainedError)
