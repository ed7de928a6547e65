"""Exceptions raised by wsq."""


class FormatError(ValueError):
    """A wsq file is malformed, corrupt, or does not match the model it is loaded into.

    The message names the tensor (or header field) and the defect.
    """
