"""Storage URLs: checked before anything is touched, and never shown with their password.

A password must not sit in a URL literally, neither as `user:password@` nor as a `password=` query
parameter: Hydra writes the composed config, the overrides and the sweeper's settings into every
job's `.hydra/*.yaml`. `refuse_literal_password` refuses it;
the password comes from the environment instead, as an interpolation that Hydra stores unresolved
(`postgresql+psycopg2://user:${oc.env:LRSWEEP_DB_PASSWORD}@host/db`), or from the driver's own
sources (libpq reads `PGPASSWORD` and `~/.pgpass`). Everything printed goes through
`hide_password`.
"""

import re
from pathlib import Path
from typing import Any

from lrsweep.grid import SweepConfigError

EXAMPLES = "e.g. sqlite:///outputs/lrsweep.db or postgresql+psycopg2://user@host/db"
# The password part of `scheme://user:password@host...`, as typed (interpolations unresolved).
_PASSWORD = re.compile(r"^[^:/]+://[^:/@]*:([^@]*)@")
# A `password=` query parameter (libpq's keyword, which SQLAlchemy passes on to the driver).
_QUERY_PASSWORD = re.compile(r"[?&]password=([^&#]*)")
HIDDEN = "***"


def hide_password(url: str) -> str:
    """`url` with its password as `***`; a string that is no URL is returned unchanged."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return url if "@" not in url and "password=" not in url else "<a storage URL>"
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "HIDDEN"})
    shown = parsed.render_as_string(hide_password=True)
    return shown.replace("password=HIDDEN", f"password={HIDDEN}")


def passwords(url: str) -> list[str]:
    """The passwords `url` holds (its userinfo's, its `password=` query's), to blank them out of
    messages that may quote them."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return []
    in_query = parsed.query.get("password", ())  # a str, or a tuple when repeated
    found = [str(parsed.password or ""), *([in_query] if isinstance(in_query, str) else in_query)]
    return [p for p in found if p]


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
        shown = hide_password(url)
        raise SweepConfigError(f"storage {shown!r} is not a database URL ({EXAMPLES})") from None
    shown = hide_password(url)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise SweepConfigError(
            f"storage {shown!r}: SQLAlchemy knows no database '{parsed.drivername}' ({EXAMPLES})"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        raise SweepConfigError(
            f"storage {shown!r}: its driver is not installed: {err}"
            f"{driver_advice(parsed.drivername, dialect.driver)}"
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


# The package that installs each SQLAlchemy driver (`dialect.driver`); `lrsweep[postgres]` brings
# psycopg2, the driver of `postgresql+psycopg2://`.
DRIVER_PACKAGES = {
    "psycopg2": "lrsweep[postgres]",
    "psycopg": "psycopg[binary]",
    "pg8000": "pg8000",
    "mysqldb": "mysqlclient",
    "pymysql": "PyMySQL",
}


def driver_advice(drivername: str, driver: str) -> str:
    """` (pip install '<package>')` for the driver a URL names: `postgresql://` alone means
    psycopg 3 to SQLAlchemy 2, not the psycopg2 of the `postgres` extra, so that case names
    both ways out."""
    package = DRIVER_PACKAGES.get(driver)
    if package is None:
        return ""
    if driver == "psycopg" and "+" not in drivername:
        return (
            f" ({drivername}:// means psycopg 3: pip install '{package}', or write "
            f"{drivername}+psycopg2:// and pip install 'lrsweep[postgres]')"
        )
    return f" (pip install '{package}')"


def check_sqlite_file(path: Path, shown: str) -> None:
    """An existing SQLite file must be a whole database: checked by a read-only SQLite connection
    (a damaged file must not get a lock file or a schema written beside or into it).

    Only SQLite opens the file: this process may already hold it open (an in-process sweep after
    another), and closing any other descriptor of it would drop the POSIX locks SQLite holds on
    it for those connections (measured: in write-ahead-log mode a later connection then saw
    "disk I/O error", or deleted the log under the others and lost their commits). A SQLite file
    in WAL mode (lrsweep's, `storage._SQLiteConnection`) can only be opened where SQLite
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
    value as written, interpolations unresolved), in its userinfo or as a `password=` query
    parameter: it would be stored in every job's folder."""
    typed = [
        m.group(1) for m in (_PASSWORD.match(raw_url), *_QUERY_PASSWORD.finditer(raw_url)) if m
    ]
    if any(value and "${" not in value for value in typed):
        raise SweepConfigError(
            f"storage {hide_password(raw_url)!r} holds a password, which Hydra would write into "
            "every job's .hydra/*.yaml: take it from the environment, e.g. "
            "study.storage='postgresql+psycopg2://user:${oc.env:LRSWEEP_DB_PASSWORD}@host/db', "
            "or leave it out and let libpq read PGPASSWORD or ~/.pgpass"
        )


def storage_reason(url: str, err: BaseException) -> str:
    """`<error type>: <the driver's first line>` of a storage error, without the password."""
    cause = err
    while cause.__cause__ is not None:  # Optuna's StorageInternalError wraps SQLAlchemy's
        cause = cause.__cause__
    cause = getattr(cause, "orig", None) or cause  # the driver's own message
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    reason = f"{type(cause).__name__}: {lines[0]}"
    for password in passwords(url):
        reason = reason.replace(password, HIDDEN)
    return reason


def storage_problem(url: str, err: BaseException) -> str:
    """One line on why the storage at `url` could not be opened, without its password."""
    return f"storage {hide_password(url)!r} cannot be used: {storage_reason(url, err)}"


def is_storage_error(err: BaseException) -> bool:
    """Whether `err`, or an error it was raised from, is the database's (SQLAlchemy's, Optuna's
    storage's, the SQLite module's): a storage fault, not a bug of the sweep."""
    import sqlite3

    import optuna
    import sqlalchemy

    kinds = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, sqlite3.Error)
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, kinds):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def raw_value(config: Any, key: str) -> Any:
    """`key` of an OmegaConf config as written (interpolations unresolved), following a value that
    is only `${other.key}` to that key; None where the key is missing."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(config, resolve=False)
    seen = set()
    while key not in seen:
        seen.add(key)
        value: Any = raw
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        match = re.fullmatch(r"\$\{([\w.]+)\}", value) if isinstance(value, str) else None
        if match is None:
            return value
        key = match.group(1)
    return None


def refuse_password_in(config: Any, key: str) -> None:
    """`refuse_literal_password` on the storage URL at `key` of `config`, as written."""
    raw = raw_value(config, key)
    if isinstance(raw, str):
        refuse_literal_password(raw)
