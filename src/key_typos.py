"""A mistyped config key (`lrr=0.05`): one line naming the close key, instead of Hydra's advice to
append it (`+lrr=0.05`), which would train silently at the default LR.

`typo_error` turns Hydra's "Could not override" composition error into a `ConfigError` with the
closest key (difflib over the keys of the config composed without the bad override).
`check_override_keys` runs before a `@hydra.main` app composes anything: each key an override sets
is looked up in the YAML files of `conf/` (a few milliseconds); only a key not found there costs a
composition, which then decides.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from src.errors import ConfigError
from src.overrides import override_key

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
_COULD_NOT_OVERRIDE = re.compile(r"Could not override '([^']+)'")


def config_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of `cfg` (nodes and leaves), `hydra` left out."""
    keys = []
    for key in cfg:
        if not prefix and key == "hydra":
            continue
        path = f"{prefix}{key}"
        keys.append(path)
        child = cfg._get_node(key)
        if isinstance(child, DictConfig):
            keys += config_keys(child, path + ".")
    return keys


def close_key(key: str, keys: Sequence[str]) -> str | None:
    """The key of `keys` closest to `key` (difflib), if any is close."""
    found = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    return found[0] if found else None


def typo_error(
    err: Exception, overrides: Sequence[str], config_name: str = "train"
) -> ConfigError | None:
    """A one-line ConfigError for Hydra's "Could not override 'KEY'" (a key the config does not
    have), with the close key; None for any other error."""
    match = _COULD_NOT_OVERRIDE.match(str(err))
    if match is None:
        return None
    key = match.group(1)
    bad = [o for o in overrides if override_key(o) == key and not o.startswith(("+", "~"))]
    value = bad[0].split("=", 1)[1] if bad and "=" in bad[0] else "<value>"
    try:
        keys = config_keys(_compose([o for o in overrides if o not in bad], config_name))
    except Exception:  # another override is bad too: no suggestion, Hydra's key is named anyway
        keys = []
    near = close_key(key, keys)
    hint = f"did you mean {near}={value}? " if near else ""
    return ConfigError(
        f"Could not override '{key}': the config has no key '{key}'; {hint}"
        f"(to add a new key on purpose: +{key}={value})"
    )


def _compose(overrides: Sequence[str], config_name: str) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


@functools.lru_cache(maxsize=32)
def _yaml(path: Path) -> dict | None:
    """A file of conf/ as written, plain YAML (libyaml's loader where PyYAML has it: a few ms for
    the lot); each is loaded once per process and only read."""
    import yaml

    if not path.is_file():
        return None
    loaded = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return loaded if isinstance(loaded, dict) else {}


def _found_in_yaml(key: str, choices: dict[str, str], config_name: str) -> bool:
    """Whether the YAML files of `conf/` surely hold `key` (False: maybe not; a composition
    decides). `choices`: the config groups' options chosen on the command line."""
    first, *rest = key.split(".")
    if (CONF_DIR / first).is_dir():  # a config group: its chosen option's file
        if not rest:
            return True
        node = _yaml(CONF_DIR / first / f"{choices.get(first, _default_choice(first))}.yaml")
    else:
        node = _yaml(CONF_DIR / f"{config_name}.yaml")
        if node is not None and first not in node and config_name != "train":
            node = _yaml(CONF_DIR / "train.yaml")  # range_test.yaml and transfer.yaml extend it
        rest = [first, *rest]
    for part in rest:
        if isinstance(node, list):
            return True  # an index into a list: left to Hydra
        if not (isinstance(node, dict) and part in node):
            return False
        node = node[part]
    return True


def _default_choice(group: str) -> str:
    for entry in (_yaml(CONF_DIR / "train.yaml") or {}).get("defaults", []):
        if isinstance(entry, dict) and group in entry:
            return str(entry[group])
    return ""


def check_override_keys(args: Sequence[str], config_name: str = "train") -> None:
    """Before a `@hydra.main` app runs: a ConfigError (with the close key) for an override that
    sets a key the config does not have. `args`: the command line after the program."""
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    choices = {
        o.split("=", 1)[0]: o.split("=", 1)[1]
        for o in overrides
        if "." not in o.split("=", 1)[0] and (CONF_DIR / o.split("=", 1)[0]).is_dir()
    }
    suspects = [
        o
        for o in overrides
        if not o.startswith(("+", "~"))
        and not override_key(o).startswith("hydra")
        and not _found_in_yaml(override_key(o), choices, config_name)
    ]
    if not suspects:
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return  # a malformed override: Hydra's own message says where
    # Sweep overrides (`lr=0.1,0.2`) cannot be composed here: left to the sweep's composition.
    plain = [o for o, p in zip(overrides, parsed, strict=True) if not p.is_sweep_override()]
    try:
        _compose(plain, config_name)
    except HydraException as err:
        found = typo_error(err, plain, config_name)
        if found is not None:
            raise found from err
