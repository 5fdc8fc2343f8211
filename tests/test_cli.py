"""src.cli: the one command-line error rule that train, refine, report and the scripts share."""

from __future__ import annotations

import pytest
from hydra.errors import OverrideParseException

from src.cli import exit_on_user_error, run_cli
from src.errors import ConfigError


def raising(err: Exception):
    def main(argv):
        raise err

    return main


@pytest.mark.parametrize(
    "err",
    [ConfigError("lr=0 is invalid:\n  a number > 0"), OverrideParseException("x", "bad  override")],
)
def test_bad_input_is_one_line_and_status_2(err, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    assert run_cli(raising(err), []) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: " + " ".join(str(err).split()) + "\n"
    with pytest.raises(SystemExit) as exited, exit_on_user_error():
        raise err
    assert exited.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_hydra_full_error_shows_the_traceback_instead(monkeypatch, capsys):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError):
        run_cli(raising(ConfigError("bad")), [])
    with pytest.raises(ConfigError), exit_on_user_error():
        raise ConfigError("bad")
    assert capsys.readouterr().err == ""


def test_other_errors_are_not_bad_input(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(ZeroDivisionError):
        run_cli(raising(ZeroDivisionError()), [])
    assert run_cli(lambda argv: 0, []) == 0
