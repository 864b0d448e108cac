"""The user's mistakes, as typed errors.

Library code raises these and never prints or exits; the entry points
(``run_recbole.py``, ``python -m recbole_metammf``, ``run_benchmark.py``,
``run_hyper.py``) turn them into one line on stderr and exit status 2
(:mod:`recbole_metammf.entry`). Any other exception is a bug and keeps its
traceback. Each class also derives from the built-in error a caller would
expect (``ValueError``, ``FileNotFoundError``), so ``except ValueError`` around
the library keeps working.
"""


class UserError(Exception):
    """A mistake in the user's input: the message says what is wrong and what to do, in one line."""


class UnknownModelError(UserError, ValueError):
    """A model name that is neither a plugin model nor a RecBole model."""


class DatasetNotFoundError(UserError, FileNotFoundError):
    """No atomic files where RecBole would look for the dataset."""

    def __str__(self):  # FileNotFoundError would print its args tuple for several args
        return str(self.args[0]) if self.args else ""


class ConfigError(UserError, ValueError):
    """A config key that nobody defines, a value of the wrong kind, a config file that cannot be read."""


class DataError(UserError, ValueError):
    """Atomic files whose content cannot be used (ragged or missing item features, unreadable rows)."""


class DistributedError(UserError, RuntimeError):
    """A multi-process run that cannot go on because another of its processes is gone (killed, crashed,
    unreachable, or silent for longer than ``ddp_timeout``). Not a mistake in the input, but the
    same one line: the cause lies outside this process and a traceback of it would say nothing more."""
