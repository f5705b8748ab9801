"""Errors a user can fix, printed by the command line as one line with exit code 2 (no traceback)."""


class StudyError(RuntimeError):
    """A study that cannot start or continue (its folder exists, is not a study, ...)."""
