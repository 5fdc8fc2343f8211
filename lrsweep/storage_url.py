"""Storage URLs: checked before anything is touched, and never shown with their password.

A password must not sit in a URL literally: Hydra writes the composed config, the overrides and
the sweeper's settings into every job's `.hydra/*.yaml`. `refuse_literal_password` refuses it;
the password comes from the environment instead, as an interpolation that Hydra stores unresolved
(`postgresql+psycopg2://user:${oc.env:LRSWEEP_DB_PASSWORD}@host/db`), or from the driver's own
sources (libpq reads `PGPASSWORD` and `~/.pgpass`). Everything printed goes through
`hide_password`.
"""

import re
from pathlib import Path

from lrsweep.grid import SweepConfigError

EXAMPLES = "e.g. sqlite:///outputs/lrsweep.db or postgresql+psycopg2://user@host/db"
# The password part of `scheme://user:password@host...`, as typed (interpolations unresolved).
_PASSWORD = re.compile(r"^[^:/]+://[^:/@]*:([^@]*)@")


def hide_password(url: str) -> str:
    """`url` with its password as `***`; a string that is no URL is returned unchanged."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url if "@" not in url else "<a storage URL>"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases and for `:memory:`)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


def check_storage_url(url: str) -> None:
    """A URL SQLAlchemy can parse, for a database whose driver is installed; else one line."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        shown = url if "@" not in url else hide_password(url)
        raise SweepConfigError(f"storage {shown!r} is not a database URL ({EXAMPLES})") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise SweepConfigError(
            f"storage {shown!r}: SQLAlchemy knows no database '{parsed.drivername}' ({EXAMPLES})"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        extra = (
            " (pip install 'lrsweep[postgres]')" if parsed.drivername.startswith("postgres") else ""
        )
        raise SweepConfigError(
            f"storage {shown!r}: its driver is not installed: {err}{extra}"
        ) from None
    if parsed.drivername.startswith("sqlite") and parsed.database in (None, "", ":memory:"):
        raise SweepConfigError(
            f"storage {shown!r} is an in-memory database, which lives in one connection: a "
            "sweep's trials need a database every job can open (a file, e.g. "
            "sqlite:///outputs/lrsweep.db)"
        )
    path = sqlite_path(url)
    if path is not None and path.is_file() and path.stat().st_size > 0:
        check_sqlite_file(path, shown)


def check_sqlite_file(path: Path, shown: str) -> None:
    """An existing SQLite file must be a whole database: checked by a read-only SQLite connection
    (a damaged file must not get a lock file or a schema written beside or into it).

    Only SQLite opens the file: this process may already hold it open (an in-process sweep after
    another), and closing any other descriptor of it would drop the POSIX locks SQLite holds on
    it for those connections (measured: in write-ahead-log mode a later connection then saw
    "disk I/O error", or deleted the log under the others and lost their commits). A SQLite file
    in WAL mode (lrsweep's, `study_protocol._SQLiteConnection`) can only be opened where SQLite
    may create its `-shm` index beside it: in a folder that does not allow that, the error says
    so."""
    import os
    import sqlite3

    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        try:
            result = connection.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.DatabaseError as err:
        if getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB:
            raise SweepConfigError(f"storage {shown!r}: {path} is not a SQLite database") from None
        result = str(err)
        if "unable to open" in result and not os.access(path.parent, os.W_OK):
            raise SweepConfigError(
                f"storage {shown!r}: {path} cannot be opened: SQLite cannot create its index "
                f"files beside it in {path.parent} (read-only?); copy it to a writable folder"
            ) from None
    if result != "ok":
        raise SweepConfigError(
            f"storage {shown!r}: {path} is damaged ({result}); restore it or use another file"
        )


def refuse_literal_password(raw_url: str) -> None:
    """Refuse a URL whose password is typed into the config or the command line (`raw_url`: the
    value as written, interpolations unresolved): it would be stored in every job's folder."""
    match = _PASSWORD.match(raw_url)
    if match and match.group(1) and "${" not in match.group(1):
        raise SweepConfigError(
            f"storage {hide_password(raw_url)!r} holds a password, which Hydra would write into "
            "every job's .hydra/*.yaml: take it from the environment, e.g. "
            "study.storage='postgresql+psycopg2://user:${oc.env:LRSWEEP_DB_PASSWORD}@host/db', "
            "or leave it out and let libpq read PGPASSWORD or ~/.pgpass"
        )


def storage_problem(url: str, err: BaseException) -> str:
    """One line on why the storage at `url` could not be opened, without its password."""
    from sqlalchemy.engine import make_url

    cause = err
    while cause.__cause__ is not None:  # Optuna's StorageInternalError wraps SQLAlchemy's
        cause = cause.__cause__
    cause = getattr(cause, "orig", None) or cause  # the driver's own message
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    reason = f"{type(cause).__name__}: {lines[0]}"
    try:
        password = make_url(url).password
    except Exception:
        password = None
    if password:
        reason = reason.replace(str(password), "***")
    return f"storage {hide_password(url)!r} cannot be used: {reason}"
