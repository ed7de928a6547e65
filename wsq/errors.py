"""Exceptions raised by wsq."""


class FormatError(ValueError):
    """A wsq file is malformed, corrupt, or does not match the model it is loaded into.

    The message names the tensor (or header field) and the defect.
    """


def missing_extra(extra: str, module: str, what: str) -> ModuleNotFoundError:
    """The error for a feature whose optional dependency is not installed: it names the extra to
    install (``pip install 'wsq[extra]'``), the missing module and what needed it. A
    ModuleNotFoundError (so an ImportError) whose ``name`` is the missing module."""
    return ModuleNotFoundError(
        f"{what} needs the {extra!r} extra ({module} is not installed): pip install 'wsq[{extra}]'",
        name=module,
    )
