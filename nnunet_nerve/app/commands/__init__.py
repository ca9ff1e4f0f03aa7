"""One module per group of verbs; each has ``add_parsers(subparsers)`` and hands the parsed
arguments to the verb's function in ``nnunet_nerve.api``, whose signature holds the defaults."""
from __future__ import annotations

import inspect


def default(function, parameter: str):
    """The default of ``parameter`` in ``function``'s signature (an ``nnunet_nerve.api`` function):
    the one place a verb's defaults are written."""
    return inspect.signature(function).parameters[parameter].default


def call(function, args, **extra):
    """Call ``function`` with the parsed options named like its parameters (plus ``extra``)."""
    names = inspect.signature(function).parameters
    kwargs = {name: getattr(args, name) for name in names if hasattr(args, name)}
    return function(**{**kwargs, **extra})
