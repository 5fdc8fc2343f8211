"""Optuna's RDB tables, read and written directly: the one module that does so.

Optuna's public storage API commits once per call and reads whole trials; a sweep's bookkeeping
needs one indexed query or one transaction where it would make dozens of calls (benchmarks:
queuing 1,000 points 0.8 s against 21.6 s, a round's read 1.9 ms against 4.5 ms, a trial's
attributes 1.5 ms against 6.4 ms). Each function here works on Optuna's own tables and models,
and only where `engine(storage)` vouches for them: an RDBStorage of an Optuna this module was
checked against (`CHECKED_OPTUNA`) whose database has a schema it knows (`CHECKED_SCHEMAS`, the
Alembic revision `RDBStorage.get_current_version()` reports). Anywhere else `engine` is None,
`transaction` yields None, and every caller takes Optuna's public API instead: slower, the same
result.

Checked against Optuna 4.0 to 5.1 (schema v3.2.0.a), on SQLite and PostgreSQL (MySQL: the
statements avoid its reserved words).
"""

from __future__ import annotations

import contextlib
import json
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

CHECKED_OPTUNA = ((4, 0), (5, 1))  # lowest and highest (major, minor) checked
CHECKED_SCHEMAS = frozenset({"v3.2.0.a"})

_vouched: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _optuna_checked() -> bool:
    import optuna

    major, minor = (int(part) for part in optuna.__version__.split(".")[:2])
    return CHECKED_OPTUNA[0] <= (major, minor) <= CHECKED_OPTUNA[1]


def engine(storage: Any) -> Any | None:
    """The storage's SQLAlchemy engine when this module may use Optuna's tables through it (see
    the module docstring), else None. Asked once per storage."""
    import optuna

    if not isinstance(storage, optuna.storages.RDBStorage):
        return None
    known = _vouched.get(storage)
    if known is None:
        try:
            known = _optuna_checked() and storage.get_current_version() in CHECKED_SCHEMAS
        except Exception:  # an unreadable version table: the public API only
            known = False
        _vouched[storage] = known
    return storage.engine if known else None


@contextlib.contextmanager
def transaction(storage: Any, ignore_integrity_error: bool = False) -> Iterator[Any]:
    """A session of Optuna's RDBStorage whose work is committed once, when the block ends
    (Optuna's own `_create_scoped_session`); None where `engine(storage)` is None, and the caller
    takes the public API. Not to be nested with Optuna's public calls on the same storage: they
    share the session."""
    if engine(storage) is None:
        yield None
        return
    try:
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        yield None
        return
    with _create_scoped_session(storage.scoped_session, ignore_integrity_error) as session:
        yield session


def running_without_heartbeat(engine: Any, study_id: int, attr: str) -> list[int]:
    """Ids of the study's trials carrying user attr `attr` that are RUNNING without a row in
    `trial_heartbeats`."""
    import sqlalchemy

    query = sqlalchemy.text(
        "SELECT t.trial_id FROM trials t "
        "JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = :attr "
        "LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
        "WHERE t.study_id = :study AND t.state = 'RUNNING' AND h.trial_id IS NULL"
    )
    with engine.connect() as connection:
        return [row[0] for row in connection.execute(query, {"attr": attr, "study": study_id})]


def trial_rows(
    engine: Any, study_id: int, attr: str, after: int, watched: Sequence[int], from_oldest: bool
) -> list[tuple[int, int, str, Any]]:
    """(trial id, number, state name, user attr `attr` or None) of the study's trials with an id
    above `after` (at or above it with `from_oldest`), or among `watched`."""
    import sqlalchemy

    args: dict[str, Any] = {"attr": attr, "study": study_id, "after": after}
    which = "t.trial_id >= :after" if from_oldest else "t.trial_id > :after"
    if watched and not from_oldest:
        which = f"({which} OR t.trial_id IN :watched)"
        args["watched"] = list(watched)
    query = sqlalchemy.text(
        "SELECT t.trial_id, t.number, t.state, a.value_json FROM trials t "
        "LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = :attr "
        f"WHERE t.study_id = :study AND {which}"
    )
    if "watched" in args:
        query = query.bindparams(sqlalchemy.bindparam("watched", expanding=True))
    with engine.connect() as connection:
        fetched = connection.execute(query, args).all()
    rows = []
    for trial_id, number, state, value_json in fetched:
        state = getattr(state, "name", state)  # a TrialState on some dialects
        value = None if value_json is None else json.loads(value_json)
        rows.append((int(trial_id), int(number), str(state), value))
    return rows


def enqueue(
    session: Any, study_id: int, points: dict[str, dict[str, Any]], attr: str
) -> list[tuple[int, str]]:
    """WAITING trials with fixed params (`fixed_params`) and user attr `attr` = the point's key,
    numbered after the study's trials with its row locked, in the one transaction of `session`;
    their (number, key)."""
    import optuna
    import sqlalchemy
    from optuna.storages._rdb import models

    models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
    count = sqlalchemy.func.count(models.TrialModel.trial_id)
    base = session.query(count).filter(models.TrialModel.study_id == study_id).scalar()
    for number, (key, params) in enumerate(points.items(), start=base):
        trial = models.TrialModel(
            study_id=study_id, number=number, state=optuna.trial.TrialState.WAITING
        )
        trial.user_attributes.append(
            models.TrialUserAttributeModel(key=attr, value_json=json.dumps(key))
        )
        trial.system_attributes.append(
            models.TrialSystemAttributeModel(key="fixed_params", value_json=json.dumps(params))
        )
        session.add(trial)
    return [(number, key) for number, key in enumerate(points, start=base)]


def older_twin(engine: Any, study_id: int, number: int, attr: str, key: str) -> int | None:
    """The number of another trial of the study whose user attr `attr` is `key` and that is
    COMPLETE, or RUNNING or WAITING and older than trial `number`; None if there is none."""
    import sqlalchemy

    query = sqlalchemy.text(
        "SELECT t.number FROM trials t "
        "JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
        "AND a.key = :attr AND a.value_json = :point "
        "WHERE t.study_id = :study AND t.number != :number AND (t.state = 'COMPLETE' "
        "OR (t.state IN ('RUNNING', 'WAITING') AND t.number < :number)) "
        "ORDER BY t.number LIMIT 1"
    )
    args = {"attr": attr, "point": json.dumps(key), "study": study_id, "number": number}
    with engine.connect() as connection:
        row = connection.execute(query, args).first()
    return None if row is None else int(row[0])


def record_params(
    storage: Any, trial_id: int, values: dict[str, Any], dists: dict[str, Any]
) -> bool:
    """Optuna's own per-parameter step (with its check against the study's earlier
    distributions) for every param of the trial, committed once; False, having written nothing,
    where this module may not."""
    write = getattr(storage, "_set_trial_param_without_commit", None)
    if write is None:
        return False
    with transaction(storage, ignore_integrity_error=True) as session:
        if session is None:
            return False
        for name, dist in dists.items():
            write(session, trial_id, name, values[name], dist)
    return True


def user_attrs(engine: Any, trial_id: int, keys: Sequence[str]) -> dict[str, Any]:
    """The trial's user attributes among `keys` (those it has), in one indexed query."""
    import sqlalchemy

    query = sqlalchemy.text(  # `a.key`: a bare `key` is a reserved word in MySQL
        "SELECT a.key, a.value_json FROM trial_user_attributes a "
        "WHERE a.trial_id = :trial AND a.key IN :keys"
    ).bindparams(sqlalchemy.bindparam("keys", expanding=True))
    with engine.connect() as connection:
        rows = connection.execute(query, {"trial": trial_id, "keys": list(keys)})
        return {key: json.loads(value) for key, value in rows}


def write_user_attrs(storage: Any, trial_id: int, attrs: dict[str, Any]) -> bool:
    """One commit for all of a trial's user attributes (Optuna's public API commits once per
    attribute, and checks the trial each time). On SQLite (3.24+) and PostgreSQL: the trial is
    checked once and the attributes are upserted in one statement, as Optuna's
    `set_trial_user_attr` upserts one; on other databases, Optuna's own per-attribute helper
    inside the one transaction. False, having written nothing, where this module may not.
    Raises UpdateFinishedTrialError like the public call (nothing is written then)."""
    write = getattr(storage, "_set_trial_attr_without_commit", None)
    bound = engine(storage)
    if write is None or bound is None:
        return False
    if not attrs:
        return True
    insert = _upsert_insert(bound.name)
    with transaction(storage, ignore_integrity_error=True) as session:
        if session is None:
            return False
        from optuna.storages._rdb import models

        if insert is None:
            for key, value in attrs.items():
                write(session, models.TrialUserAttributeModel, trial_id, key, value)
            return True
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        storage.check_trial_is_updatable(trial_id, trial.state)
        table = models.TrialUserAttributeModel
        rows = [
            {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()
        ]
        statement = insert(table).values(rows)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[table.trial_id, table.key],
                set_={"value_json": statement.excluded.value_json},
            )
        )
    return True


def _upsert_insert(dialect: str) -> Any:
    """The `insert` construct with `on_conflict_do_update` for this database, or None."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        return insert
    if dialect == "sqlite":
        import sqlite3

        if sqlite3.sqlite_version_info >= (3, 24, 0):
            from sqlalchemy.dialects.sqlite import insert

            return insert
    return None


def first_distributions(engine: Any, study_id: int) -> dict[str, Any]:
    """Each parameter's distribution as the study first recorded it, in one query."""
    import sqlalchemy
    from optuna.distributions import json_to_distribution

    query = sqlalchemy.text(
        "SELECT p.param_name, p.distribution_json FROM trial_params p WHERE p.param_id IN ("
        "SELECT MIN(q.param_id) FROM trial_params q JOIN trials t ON t.trial_id = q.trial_id "
        "WHERE t.study_id = :study GROUP BY q.param_name)"
    )
    with engine.connect() as connection:
        rows = connection.execute(query, {"study": study_id})
        return {name: json_to_distribution(text) for name, text in rows}


def convert_params(engine: Any, study_id: int, conversions: dict[str, Any]) -> None:
    """Rewrite every record of each named parameter in the study from its categorical of numbers
    to `conversions[name]`, the same values (Optuna stores a categorical's index), in one
    transaction."""
    import sqlalchemy
    from optuna.distributions import (
        CategoricalDistribution,
        distribution_to_json,
        json_to_distribution,
    )

    select = sqlalchemy.text(
        "SELECT p.param_id, p.param_value, p.distribution_json FROM trial_params p "
        "JOIN trials t ON t.trial_id = p.trial_id "
        "WHERE t.study_id = :study AND p.param_name = :name"
    )
    update = sqlalchemy.text(
        "UPDATE trial_params SET param_value = :value, distribution_json = :dist "
        "WHERE param_id = :id"
    )
    with engine.begin() as connection:
        for name, dist in conversions.items():
            text = distribution_to_json(dist)
            for param_id, value, old in connection.execute(
                select, {"study": study_id, "name": name}
            ).all():
                old = json_to_distribution(old)
                if isinstance(old, CategoricalDistribution):
                    external = old.to_external_repr(value)
                    connection.execute(
                        update,
                        {"value": dist.to_internal_repr(external), "dist": text, "id": param_id},
                    )
