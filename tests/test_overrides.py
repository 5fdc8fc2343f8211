"""src.overrides: keys, exact values, the overrides to train one model with the chosen LR."""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser

from src import overrides
from src.study import compose_config


def test_replace_overrides_keeps_floats_exact_and_hydra_reads_them_back():
    out = overrides.replace_overrides(
        ["+a.b=1", "epochs=3", "sweep.low=1"], {"sweep.low": 1 / 3, "sweep.seeds": [3, 4]}
    )
    assert out == ["+a.b=1", "epochs=3", f"sweep.low={1 / 3!r}", "sweep.seeds=[3,4]"]
    assert overrides.override_key("+a.b=1") == "a.b" and overrides.override_key("~data") == "data"
    cfg = compose_config(out[1:])
    assert (cfg.sweep.low, list(cfg.sweep.seeds)) == (1 / 3, [3, 4])


def test_train_overrides_drop_the_sweep_keys():
    out = overrides.train_overrides(
        [
            "data=mnist1d",
            "study.name=x",
            "sweep.seeds=[1,2]",
            "hydra.sweeper.n_jobs=2",
            "lr=1",
            "epochs=3",
            "checkpoint_dir=/w",
        ],
        0.03,
    )
    assert out == ["data=mnist1d", "epochs=3", "checkpoint_dir=/w", "lr=0.03"]


def test_choice_override_is_a_quoted_exact_choice():
    values = [1 / 3, 0.1 * 3]
    text = str(overrides.ChoiceOverride(values))
    assert text == f"'choice({1 / 3!r},{0.1 * 3!r})'"
    parser = OverridesParser.create()
    (override,) = parser.parse_overrides([f"hydra.sweeper.params.lr={text}"])
    assert not override.is_sweep_override()  # Hydra refuses a sweep over a hydra. key
    assert parser.parse_override("lr=" + override.value()).value().list == values
