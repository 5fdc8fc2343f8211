"""Compose a sweep's job configs once, not once per job.

Hydra's launchers call `config_loader.load_sweep_config(master, overrides)` for every job, and that
re-reads and re-merges every YAML file of the config tree: about 0.15 s a job on 2 cores, more than
a small trial's training. In a grid sweep the jobs differ only in a few values (`lr=`, `seed=`,
`trial=`), so `TemplateConfigLoader` composes the first job of each shape with Hydra itself, keeps
it as a template, and builds every later job of that shape as a copy of the template with its own
values set the way Hydra's composition sets them (`OmegaConf.update(cfg, key, value, merge=True)`),
its own `hydra.overrides.task`, `hydra.overrides.hydra` and `hydra.job.override_dirname`.

The fast path takes only what it can reproduce exactly: a plain `key=value` override (no `+`, `++`,
`~` prefix, no package, not a sweep) of a key in `value_keys` that is not a config group, with a
scalar value. Anything else -- a swept config group (`model=mlp,cnn`), a list or dict value, a new
key -- goes through Hydra's full composition, as do all jobs when `value_keys` is empty. The
resulting configs are equal to Hydra's own (tests/test_compose.py compares them key by key).

Templates live in a module-level cache keyed by the sweep's token, so they also survive in
long-lived launcher workers (joblib's loky processes), where the loader arrives pickled per job.
"""

import copy
import pickle
from collections.abc import Sequence
from typing import Any

# Hydra composes `override_dirname` with this function; hydra-core is pinned to 1.3.
from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra.core.config_loader import ConfigLoader
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

# Hydra re-executes every plugin module in place each time it rebuilds its plugin registry, and
# a joblib worker rebuilds it for every job (`Singleton.set_state`): the caches below keep the
# objects of the module's first execution, or a worker would compose every job in full (measured:
# 0.13 s a job).
# token -> {shape -> template (see `_Template`)}; only the newest sweep's token is kept.
_TEMPLATES: dict[str, dict[tuple[str, ...], "_Template"]] = globals().get("_TEMPLATES", {})
# override line -> its parse (a sweep's jobs repeat their fixed overrides)
_PARSED: dict[str, Override] = globals().get("_PARSED", {})
_MAX_PARSED = 10_000
# token -> Hydra's config loader, unpickled once per worker process (see `__reduce__`)
_LOADERS: dict[str, ConfigLoader] = globals().get("_LOADERS", {})
_SCALARS = (int, float, str, bool, type(None))


class _Template:
    """A composed job config kept for copying: as its pickle, which `pickle.loads` turns into an
    equal config in a quarter of the time `copy.deepcopy` takes (0.8 ms against 2.8 ms for
    lrsweep's job config here); a config that cannot be pickled is kept and deep-copied."""

    def __init__(self, config: DictConfig) -> None:
        try:
            self._pickled: bytes | None = pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
            self._config = None
        except (pickle.PicklingError, TypeError, AttributeError):
            self._pickled, self._config = None, copy.deepcopy(config)

    def copy(self) -> DictConfig:
        if self._pickled is not None:
            return pickle.loads(self._pickled)
        return copy.deepcopy(self._config)


def _restore(pickled_loader: bytes, value_keys: list[str], token: str) -> "TemplateConfigLoader":
    loader = _LOADERS.get(token)
    if loader is None:
        _LOADERS.clear()
        loader = _LOADERS[token] = pickle.loads(pickled_loader)
    return TemplateConfigLoader(loader, value_keys, token)


def _parse(line: str) -> Override:
    """One override, parsed once per process (Hydra's ANTLR parser costs ~0.3 ms each). The
    result is only read."""
    override = _PARSED.get(line)
    if override is None:
        if len(_PARSED) >= _MAX_PARSED:
            _PARSED.clear()
        (override,) = OverridesParser.create().parse_overrides([line])
        _PARSED[line] = override
    return override


class TemplateConfigLoader(ConfigLoader):
    """A `ConfigLoader` that delegates everything to Hydra's, but serves `load_sweep_config` from
    a template when a job differs from an earlier one only in `value_keys` values."""

    def __init__(self, loader: ConfigLoader, value_keys: Sequence[str], token: str) -> None:
        self._loader = loader
        self.value_keys = frozenset(value_keys)
        self._token = token
        self._pickled_loader: bytes | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled for every job by process launchers (joblib): Hydra's loader, which holds the
        config repository and takes ~35 ms to pickle, is pickled once per sweep (it does not
        change during one) and unpickled once per worker process."""
        if self._pickled_loader is None:
            self._pickled_loader = pickle.dumps(self._loader)
        return (_restore, (self._pickled_loader, sorted(self.value_keys), self._token))

    # ---- the fast path ----
    def load_sweep_config(
        self, master_config: DictConfig, sweep_overrides: list[str]
    ) -> DictConfig:
        parsed = [_parse(line) for line in sweep_overrides]
        fast = [self._is_value(o) for o in parsed]
        if not any(fast):
            return self._loader.load_sweep_config(master_config, sweep_overrides)
        shape = tuple(
            f"{o.key_or_group}=<value>" if is_value else str(o.input_line)
            for o, is_value in zip(parsed, fast, strict=True)
        )
        templates = _TEMPLATES.get(self._token)
        if templates is None:
            _TEMPLATES.clear()
            templates = _TEMPLATES[self._token] = {}
        template = templates.get(shape)
        if template is None:
            config = self._loader.load_sweep_config(master_config, sweep_overrides)
            if any(
                o.key_or_group in config.hydra.runtime.choices
                for o, is_value in zip(parsed, fast, strict=True)
                if is_value
            ):
                self.value_keys = self.value_keys - set(config.hydra.runtime.choices)
                return config  # a config group: Hydra's composition every time
            templates[shape] = _Template(config)
            return config
        config = template.copy()
        for override, is_value in zip(parsed, fast, strict=True):
            if is_value:
                OmegaConf.update(config, override.key_or_group, override.value(), merge=True)
        task = [o for o in parsed if not o.is_hydra_override()]
        with open_dict(config.hydra):
            config.hydra.overrides.task = [o.input_line for o in task]
            # The master's `hydra.*` overrides and the job's own, as Hydra records them.
            config.hydra.overrides.hydra = [
                *master_config.hydra.overrides.hydra,
                *(o.input_line for o in parsed if o.is_hydra_override()),
            ]
            config.hydra.job.override_dirname = get_overrides_dirname(
                overrides=task,
                kv_sep=config.hydra.job.config.override_dirname.kv_sep,
                item_sep=config.hydra.job.config.override_dirname.item_sep,
                exclude_keys=config.hydra.job.config.override_dirname.exclude_keys,
            )
        OmegaConf.copy_cache(from_config=master_config, to_config=config)
        return config

    def _is_value(self, override: Override) -> bool:
        return (
            override.key_or_group in self.value_keys
            and override.type == OverrideType.CHANGE
            and override.package is None
            and not override.is_sweep_override()
            and isinstance(override.value(), _SCALARS)
        )

    # ---- everything else is Hydra's ----
    def load_configuration(
        self,
        config_name: str | None,
        overrides: list[str],
        run_mode: RunMode,
        from_shell: bool = True,
        validate_sweep_overrides: bool = True,
    ) -> DictConfig:
        return self._loader.load_configuration(
            config_name, overrides, run_mode, from_shell, validate_sweep_overrides
        )

    def get_search_path(self) -> Any:
        return self._loader.get_search_path()

    def get_sources(self) -> list[Any]:
        return self._loader.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self._loader.list_groups(parent_name)

    def get_group_options(
        self,
        group_name: str,
        results_filter: ObjectType | None = ObjectType.CONFIG,
        config_name: str | None = None,
        overrides: list[str] | None = None,
    ) -> list[str]:
        return self._loader.get_group_options(group_name, results_filter, config_name, overrides)

    def compute_defaults_list(
        self, config_name: str | None, overrides: list[str], run_mode: RunMode
    ) -> Any:
        return self._loader.compute_defaults_list(config_name, overrides, run_mode)
