"""Errors that reach the user as one line (the CLI prints them without a traceback)."""


class TfrnnError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""

    exit_code = 1


class DataError(TfrnnError):
    """The text to train on is missing, unreadable, too short or corrupt."""


class ConfigError(TfrnnError):
    """A training option is out of range or inconsistent."""


class TrainingDiverged(TfrnnError):
    """The loss became NaN or infinite during training."""


class Interrupted(TfrnnError):
    """The user interrupted a long job (Ctrl-C); what was finished is kept."""

    exit_code = 130
