"""One-line error text: every error a user sees or a record keeps is one line, however long the
exception (the TFLite converter raises pages of MLIR). Pure."""


def one_line(exc: BaseException, limit: int = 500) -> str:
    """The exception's first non-empty line, else its type name, cut at ``limit`` characters."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def describe(exc: BaseException, limit: int = 500) -> str:
    """``Type: first line``, e.g. for a record's error field."""
    return f"{type(exc).__name__}: {one_line(exc, limit)}"
