"""Whose fault a failed insert is: the records' (set them aside) or the database's (retry later).

The database can refuse a record for its own data: a NUL byte in a text, a value longer than
its column, a number out of range, a value the driver cannot encode, a broken constraint.
Retrying never helps, so the writer sets such a record aside in the dead letter and the rest of
its batch goes on. Anything else is the database's: a refused, cut or silent connection, a
timeout, a server that is read-only, full, shutting down or not migrated yet. Retrying does
help there, so records wait in the spool.

PostgreSQL errors reach SQLAlchemy through asyncpg as the generic `DBAPIError` (only integrity
violations get their own class), so the SQLSTATE class is what tells the two apart.
"""

from __future__ import annotations

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

# SQLSTATE classes caused by the values sent: data exception (22: NUL byte, value too long,
# out of range, bad encoding), integrity constraint violation (23), program limit exceeded
# (54: e.g. a value too large for its index).
_RECORD_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})
# Raised in this process while a record's values are encoded for the driver (UnicodeError is
# a ValueError); OSError and TimeoutError, the connection-level failures, are not among them.
_ENCODING_ERRORS = (TypeError, ValueError, OverflowError)


def is_refusal(exc: BaseException) -> bool:
    """True when `exc` is the database (or its driver) refusing the records' data."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return False
        if isinstance(exc, IntegrityError | DataError):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None)
        return isinstance(sqlstate, str) and sqlstate[:2] in _RECORD_SQLSTATE_CLASSES
    if isinstance(exc, StatementError):  # not a driver error: a bind processor failed on a value
        return isinstance(exc.orig, _ENCODING_ERRORS)
    return isinstance(exc, _ENCODING_ERRORS)
