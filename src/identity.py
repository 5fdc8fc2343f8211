"""An experiment's identity (`src.study.experiment_identity`, recorded by the sweeper as the study's
`config` attribute) compared with another, and turned back into the overrides that reproduce it.

The report rebuilds its "train with" command from the study's recorded identity, not from the
overrides it was given: `python -m src.report study.name=<name>` names the study but none of its
settings (a sweep at `epochs=2` must be trained at `epochs=2`). A study that is not found is
described by how the nearest one there differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from src.overrides import format_value, override_key

MISSING = object()  # a key one side does not have


def flatten(identity: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted leaf keys -> values (`{"model": {"width": 64}}` -> `{"model.width": 64}`); lists
    are leaves."""
    flat: dict[str, Any] = {}
    for key, value in identity.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def differences(mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, my value, their value) for every leaf that differs, sorted by key; `MISSING`
    where one side lacks the key."""
    a, b = flatten(mine), flatten(theirs)
    return [
        (key, a.get(key, MISSING), b.get(key, MISSING))
        for key in sorted(set(a) | set(b))
        if a.get(key, MISSING) != b.get(key, MISSING)
    ]


def describe(diffs: Sequence[tuple[str, Any, Any]], limit: int = 4) -> str:
    """`epochs (2 vs 5), model.width (64 vs 128)`: the first `limit` differences, then a count."""

    def shown(value: Any) -> str:
        return "unset" if value is MISSING else format_override_value(value)

    parts = [f"{key} ({shown(a)} vs {shown(b)})" for key, a, b in diffs[:limit]]
    if len(diffs) > limit:
        parts.append(f"and {len(diffs) - limit} more")
    return ", ".join(parts)


def nearest(
    identity: Mapping[str, Any], recorded: Mapping[str, Mapping[str, Any]]
) -> tuple[str, list[tuple[str, Any, Any]]] | None:
    """Of `recorded` (study name -> its recorded identity), the study whose identity differs from
    `identity` in the fewest leaves, with those differences (theirs first); None if none."""
    scored = [
        (len(d), name, d)
        for name, theirs in recorded.items()
        for d in [differences(theirs, identity)]
    ]
    if not scored:
        return None
    _, name, diffs = min(scored, key=lambda s: (s[0], s[1]))
    return name, diffs


def format_override_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back: `null`, `true`, exact floats, lists,
    and strings quoted when they hold anything but word characters and `./:-`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        plain = value and all(c.isalnum() or c in "_./:-" for c in value)
        return value if plain else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_override_value(v) for v in value) + "]"
    return format_value(value)


def overrides_for(
    recorded: Mapping[str, Any], composed: Mapping[str, Any], groups: Mapping[str, Mapping]
) -> list[str]:
    """The overrides that turn the identity `composed` (what the kept overrides compose to) into
    `recorded` (the study's). `groups`: group -> {option name -> that option's identity value}
    (`conf/<group>/*.yaml`): a group that differs is selected by the option closest to the
    recorded one (same `_target_`, fewest differing keys), then its keys are set one by one; a
    group whose `_target_` no option has is written out whole (`~group +group._target_=...`)."""
    out: list[str] = []
    for key in recorded:
        theirs, mine = recorded[key], composed.get(key, MISSING)
        if theirs == mine:
            continue
        if not isinstance(theirs, Mapping):
            out.append(f"{key}={format_override_value(theirs)}")
            continue
        options = {
            name: value
            for name, value in (groups.get(key) or {}).items()
            if isinstance(value, Mapping) and value.get("_target_") == theirs.get("_target_")
        }
        if isinstance(mine, Mapping) and mine.get("_target_") == theirs.get("_target_"):
            base, selected = mine, None
        elif options:
            selected = min(options, key=lambda n: (len(differences(options[n], theirs)), n))
            base = options[selected]
        else:
            out.append(f"~{key}")
            base, selected = {}, None
        if selected is not None:
            out.append(f"{key}={selected}")
        for leaf, have, want in differences(base, theirs):
            path = f"{key}.{leaf}"
            if want is MISSING:
                out.append(f"~{path}")
            elif have is MISSING:
                out.append(f"+{path}={format_override_value(want)}")
            else:
                out.append(f"{path}={format_override_value(want)}")
    return out


def train_overrides_from_study(
    overrides: Sequence[str], lr: float, recorded: Mapping[str, Any] | None
) -> list[str]:
    """The overrides to train one model at `lr` in the experiment a study recorded (`recorded`,
    its `config` attribute): `overrides` less the sweep's keys, then whatever it takes to make
    their composed identity the recorded one (an override of a key set here is dropped). Without
    a recorded identity (a study not made by the sweeper), `src.overrides.train_overrides`."""
    from src.overrides import replace_overrides, train_overrides
    from src.study import CONF_DIR, compose_config, experiment_identity

    kept = train_overrides(overrides, lr)[:-1]  # its last one is `lr=`
    if not recorded:
        return train_overrides(overrides, lr)
    composed = experiment_identity(compose_config(kept))
    groups = {
        key: _group_options(key, [o for o in kept if not _under(o, key)])
        for key, value in recorded.items()
        if isinstance(value, Mapping) and value != composed.get(key) and (CONF_DIR / key).is_dir()
    }
    added = overrides_for(recorded, composed, groups)
    replaced = {override_key(o) for o in added}
    regrouped = {k for k in replaced if k in groups or any(o == f"~{k}" for o in added)}
    kept = [
        o
        for o in kept
        if override_key(o) not in replaced and not any(_under(o, g) for g in regrouped)
    ]
    return replace_overrides([*kept, *added], {"lr": float(lr)})


def _under(override: str, group: str) -> bool:
    """Whether `override` sets `group` or one of its keys."""
    key = override_key(override)
    return key == group or key.startswith(group + ".")


def _group_options(group: str, overrides: Sequence[str]) -> dict[str, Any]:
    """option name -> the identity value of `group=<option>` composed with `overrides` (which set
    nothing in `group`), for each `conf/<group>/*.yaml` that composes."""
    from src.study import CONF_DIR, compose_config, experiment_identity

    options = {}
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        try:
            cfg = compose_config([*overrides, f"{group}={path.stem}"])
        except Exception:  # an option these overrides cannot compose with is not a candidate
            continue
        options[path.stem] = experiment_identity(cfg)[group]
    return options
