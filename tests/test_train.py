"""One trial (`src.train`): real torch training on tiny data, no mocks.

Most tests call `train(compose_config([...]))` in-process (~0.1 s a trial). The few CLI runs
(`python -m src.train`, ~4-8 s each) run in parallel in the background: see section 8.
"""

from __future__ import annotations

import importlib
import math
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from subprocess import CompletedProcess

import pytest
import torch
from conftest import ROOT, TINY, run_module, run_python
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src import train as train_module
from src.chance import chance_threshold
from src.checkpoint import checkpoint_key, initial_model
from src.data import as_splits
from src.errors import ConfigError
from src.study import compose_config
from src.train import check_config, train
from src.trial_record import TrialResult

# The bring-your-own overrides the README shows (see tests/byo_example.py).
BYO = [
    "~data",
    "+data._target_=tests.byo_example.make_data",
    "~model",
    "+model._target_=tests.byo_example.TinyNet",
]
DIGITS_TRAIN = 1437  # digits' train split (conf/data/digits.yaml)
CUDA = torch.cuda.is_available()


# --- helpers ------------------------------------------------------------------------------------


def model_key(overrides: list[str]) -> tuple[str, str]:
    """(checkpoint key, checkpoint_dir) a trial with these overrides uses, computed without training."""
    cfg = compose_config(overrides)
    splits = as_splits(instantiate(cfg.data))
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    key = checkpoint_key(model_config, splits.input_shape, splits.num_classes, cfg.init_seed)
    return key, cfg.checkpoint_dir


def build_model(overrides: list[str], directory: str | Path):
    """The initial model of a trial with these overrides, as `train` restores (or creates) it."""
    cfg = compose_config(overrides)
    splits = as_splits(instantiate(cfg.data))
    key, _ = model_key(overrides)
    return initial_model(
        lambda: instantiate(
            cfg.model, input_shape=splits.input_shape, num_classes=splits.num_classes
        ),
        key,
        directory,
        cfg.init_seed,
    )


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def error_line(proc: CompletedProcess) -> str:
    """The one line a ConfigError prints: exit 2, `error: ...`, no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., TrialResult]:
    """`run(*overrides)`: one in-process trial in `tmp_path` (where `outputs/` lands)."""
    monkeypatch.chdir(tmp_path)
    # `tests.byo_example` importable, as it is for `python -m src.train` run from the root.
    monkeypatch.syspath_prepend(str(ROOT))
    return lambda *overrides: train(compose_config(list(overrides)))


@pytest.fixture
def byo(monkeypatch: pytest.MonkeyPatch):
    """The module `tests.byo_example`, by the name the overrides use: imported as `byo_example` it
    would be a second module object (with a second `RecordingSGD.lrs`)."""
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("tests.byo_example")


@pytest.fixture
def recording_sgd(run, byo) -> type:
    """`RecordingSGD` of `tests/byo_example.py`, its record cleared."""
    cls = byo.RecordingSGD
    cls.lrs.clear()
    yield cls
    cls.lrs.clear()


# --- 1. the shared initial weights ----------------------------------------------------------------


def test_a_trial_process_freezes_what_it_holds_once(tmp_path: Path) -> None:
    """After its first trial a process's objects leave the garbage collector's full passes
    (`gc.freeze`); later trials' objects stay collectable: the freeze happens once."""
    code = (
        "import gc\n"
        "from src.train import freeze_long_lived\n"
        "assert gc.get_freeze_count() == 0\n"
        "freeze_long_lived()\n"
        "frozen = gc.get_freeze_count()\n"
        "later = [[] for _ in range(10_000)]\n"
        "freeze_long_lived()\n"
        "print(frozen > 100_000, gc.get_freeze_count() == frozen)\n"
    )
    assert run_python("-c", code, cwd=tmp_path).split() == ["True", "True"]


def test_trials_at_different_lrs_restore_identical_initial_weights(run, tmp_path: Path) -> None:
    first = run(*TINY, "lr=0.1")
    key, directory = model_key(TINY)
    assert first.checkpoint == key  # the key is that of (model config, input shape, classes, seed)
    path = tmp_path / directory / f"{key}.pt"
    before, content = path.stat(), path.read_bytes()

    second = run(*TINY, "lr=0.001")
    assert second.checkpoint == first.checkpoint
    after = path.stat()  # not rewritten: same inode (no atomic replace), same mtime, same bytes
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert path.read_bytes() == content
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temp files left behind

    # What the second trial restored is the file, bit for bit; and a build with no file to load
    # (another directory) creates the same weights: the file is a function of its key.
    saved = torch.load(path, weights_only=True)
    assert_same_state(build_model([*TINY, "lr=0.001"], path.parent).state_dict(), saved)
    assert_same_state(build_model([*TINY, "lr=0.001"], tmp_path / "fresh").state_dict(), saved)


def test_an_existing_checkpoint_is_loaded_not_reinitialised(run, tmp_path: Path) -> None:
    key, directory = model_key(TINY)
    path = tmp_path / directory / f"{key}.pt"
    fresh = build_model(TINY, path.parent).state_dict()
    doubled = {k: v * 2 for k, v in fresh.items()}
    torch.save(doubled, path)
    assert_same_state(build_model([*TINY, "lr=0.5"], path.parent).state_dict(), doubled)


def test_another_init_seed_gives_another_checkpoint(run, tmp_path: Path) -> None:
    a = run(*TINY)
    b = run(*TINY, "init_seed=1")
    assert a.checkpoint != b.checkpoint
    init = tmp_path / "outputs" / "init"
    assert sorted(os.listdir(init)) == sorted([f"{a.checkpoint}.pt", f"{b.checkpoint}.pt"])
    state_a = torch.load(init / f"{a.checkpoint}.pt", weights_only=True)
    state_b = torch.load(init / f"{b.checkpoint}.pt", weights_only=True)
    assert state_a.keys() == state_b.keys()
    assert not any(torch.equal(state_a[k], state_b[k]) for k in state_a if k.endswith("weight"))


def test_a_broken_or_mismatched_checkpoint_is_a_config_error(run, tmp_path: Path) -> None:
    key, directory = model_key(TINY)
    path = tmp_path / directory / f"{key}.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"^checkpoint .* cannot be read .*; delete it$"):
        run(*TINY)
    torch.save({"w": torch.zeros(3)}, path)
    with pytest.raises(
        ConfigError, match=r"^checkpoint .* does not match the model .*unexpected \['w'\]"
    ):
        run(*TINY)
    assert torch.load(path, weights_only=True).keys() == {"w"}  # reported, never overwritten


# --- 2. the LR schedule, as the optimizer sees it -------------------------------------------------

SCHEDULE = [*TINY, "batch_size=512", "epochs=3", "lr=0.1"]  # ceil(1437 / 512) = 3 steps an epoch
STEPS_PER_EPOCH = math.ceil(DIGITS_TRAIN / 512)


def test_warmup_is_linear_per_batch_then_constant(run, recording_sgd) -> None:
    run(*SCHEDULE, "warmup_epochs=2", "optimizer._target_=tests.byo_example.RecordingSGD")
    lr, warmup_steps = 0.1, 2 * STEPS_PER_EPOCH
    # Exact equality: the documented rule is `lr * k / K` in Python floats; the same expression in
    # the same order rounds the same way, and nothing between `fit` and `step()` converts the value.
    expected = [lr * k / warmup_steps for k in range(1, warmup_steps + 1)] + [lr] * STEPS_PER_EPOCH
    assert recording_sgd.lrs == expected


def test_cosine_decays_monotonically_to_zero_after_warmup(run, recording_sgd) -> None:
    run(
        *SCHEDULE,
        "warmup_epochs=1",
        "schedule=cosine",
        "optimizer._target_=tests.byo_example.RecordingSGD",
    )
    lr, lrs = 0.1, recording_sgd.lrs
    assert len(lrs) == 3 * STEPS_PER_EPOCH
    warmup, decay = lrs[:STEPS_PER_EPOCH], lrs[STEPS_PER_EPOCH:]
    assert warmup == [lr * k / STEPS_PER_EPOCH for k in range(1, STEPS_PER_EPOCH + 1)]
    assert decay[0] == lr
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert decay[-1] == pytest.approx(0.0, abs=1e-12)
    steps = len(decay) - 1
    assert decay == pytest.approx(
        [lr * 0.5 * (1 + math.cos(math.pi * i / steps)) for i in range(steps + 1)]
    )


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_no_warmup_starts_at_full_lr(run, recording_sgd, schedule: str) -> None:
    run(
        *SCHEDULE,
        "warmup_epochs=0",
        f"schedule={schedule}",
        "optimizer._target_=tests.byo_example.RecordingSGD",
    )
    assert recording_sgd.lrs[0] == 0.1
    if schedule == "constant":
        assert recording_sgd.lrs == [0.1] * 3 * STEPS_PER_EPOCH


# --- 3. divergence ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "log_every", [1, 10_000], ids=["checked-every-step", "checked-at-epoch-end"]
)
def test_a_huge_lr_diverges_early_and_scores_zero(run, log_every: int) -> None:
    result = run(*TINY, "epochs=4", "lr=1e6", f"log_every={log_every}")
    assert result.diverged
    assert result.epochs_run < 4
    assert result.val_acc == 0.0 and math.isfinite(result.val_acc)
    assert result.val_loss == math.inf
    assert all(math.isfinite(v) for v in result.train_loss + result.val_acc_curve)


def test_a_sane_lr_does_not_diverge(run) -> None:
    result = run(*TINY, "lr=0.05")
    assert not result.diverged
    assert result.epochs_run == 2 == len(result.train_loss) == len(result.val_acc_curve)
    assert result.val_acc == result.val_acc_curve[-1] > 0.5
    assert math.isfinite(result.val_loss)


def test_weights_blown_up_by_the_last_step_count_as_diverged(run) -> None:
    # One step in all (batch = whole train split, 1 epoch): its loss is finite, its update is not.
    result = run("lr=1e30", "epochs=1", "warmup_epochs=0", "batch_size=2000")
    assert result.diverged and result.val_acc == 0.0


def test_a_test_split_is_scored_after_training_and_never_the_objective(run) -> None:
    result = run(*TINY, "lr=0.05", "data.test_fraction=0.2")
    assert result.test_acc is not None and 0.5 < result.test_acc <= 1.0  # it learned
    assert result.test_acc != result.val_acc  # another split (359 images, not the 360 of val)
    assert run(*TINY, "lr=0.05").test_acc is None  # no test split, no test score


def test_a_run_still_at_chance_after_warmup_stops_and_keeps_its_score(run) -> None:
    # lr=1e-6 barely moves the weights: at chance (~0.1 on digits) after 1 warmup + 1 epoch.
    result = run(*TINY, "epochs=5", "warmup_epochs=1", "lr=1e-6")
    assert result.stopped_at_chance and not result.diverged
    assert result.epochs_run == 2 == len(result.val_acc_curve)
    assert result.val_acc == result.val_acc_curve[-1] <= 1.2 * 37 / 360  # 37/360: majority class
    full = run(*TINY, "epochs=5", "warmup_epochs=1", "lr=1e-6", "stop_at_chance=false")
    assert not full.stopped_at_chance and full.epochs_run == 5
    assert full.val_acc_curve[:2] == result.val_acc_curve  # same run until the stop


def test_a_learning_run_is_not_stopped_at_chance(run) -> None:
    result = run(*TINY, "epochs=3", "warmup_epochs=1", "lr=0.05")
    assert not result.stopped_at_chance and result.epochs_run == 3


# 90/10 classes (tests/byo_example.make_imbalanced_data): the majority-class rate is 0.9.
IMBALANCED = [
    "~data",
    "+data._target_=tests.byo_example.make_imbalanced_data",
    "~model",
    "+model._target_=tests.byo_example.TinyNet",
    "batch_size=32",
    "warmup_epochs=1",
]


def test_a_learning_run_on_imbalanced_data_is_not_stopped_at_chance(run) -> None:
    result = run(*IMBALANCED, "epochs=4", "lr=0.1")
    assert not result.stopped_at_chance and result.epochs_run == 4
    assert result.val_acc_curve[1] > 0.9  # it learned past the majority rate by epoch 2


def test_a_run_at_chance_on_imbalanced_data_is_stopped(run) -> None:
    result = run(*IMBALANCED, "epochs=4", "lr=1e-6")
    assert result.stopped_at_chance and result.epochs_run == 2


def test_a_run_that_ran_all_its_epochs_is_not_labelled_stopped(run) -> None:
    # At chance on its last epoch (lr=1e-6 learns nothing), but nothing was cut short.
    result = run(*IMBALANCED, "epochs=2", "lr=1e-6")
    assert result.epochs_run == 2 and not result.stopped_at_chance


@pytest.mark.parametrize(
    ("majority", "untrained", "n_val", "expected"),
    [
        (0.9, 0.5, 200, 0.9 + 2 * math.sqrt(0.9 * 0.1 / 200)),  # two standard errors
        (0.9, 0.5, 4, 0.95),  # few examples: capped at half the headroom
        (0.98, 0.2, 10**6, 0.98 + 2 * math.sqrt(0.98 * 0.02 / 10**6)),  # below 1.0
        (0.1, 0.3, 360, 0.3 + 2 * math.sqrt(0.3 * 0.7 / 360)),  # the untrained model's score
        (1.0, 0.5, 100, None),  # one class: no accuracy is better than chance
    ],
)
def test_the_chance_threshold_stays_below_one_and_above_guessing(
    majority: float, untrained: float, n_val: int, expected: float | None
) -> None:
    threshold = chance_threshold(majority, untrained, n_val)
    if expected is None:
        assert threshold is None
    else:
        assert threshold == pytest.approx(expected) and max(majority, untrained) < threshold < 1


# --- 4. determinism -----------------------------------------------------------------------------


def test_same_seed_same_curves_other_seed_other_curve(run) -> None:
    first = run(*TINY, "seed=3")
    train_module._load_data.cache_clear()  # rebuilt data: the result must not hang on the cache
    second = run(*TINY, "seed=3")
    assert first.train_loss == second.train_loss
    assert first.val_acc_curve == second.val_acc_curve
    assert (first.val_acc, first.val_loss) == (second.val_acc, second.val_loss)
    other = run(*TINY, "seed=4")
    # Same initial weights: only the batch order differs.
    assert other.checkpoint == first.checkpoint
    assert other.train_loss != first.train_loss


# --- 5. bad input -------------------------------------------------------------------------------


def bad(key: str, *overrides: str, marks=()):
    return pytest.param(key, list(overrides), id=" ".join(overrides), marks=marks)


BAD = [
    bad("lr", "lr=0"),
    bad("lr", "lr=-1"),
    bad("lr", "lr=nan"),
    bad("lr", "lr=inf"),
    bad("lr", "lr=fast"),
    bad("lr", "lr=true"),
    bad("epochs", "epochs=0"),
    bad("epochs", "epochs=2.5"),
    bad("warmup_epochs", "warmup_epochs=5", "epochs=5"),
    bad("warmup_epochs", "warmup_epochs=-1"),
    bad("batch_size", "batch_size=0"),
    bad("schedule", "schedule=linear"),
    bad("metric", "metric=accuracy"),
    bad("threads", "threads=0"),
    bad("log_every", "log_every=0"),
    bad("seed", "seed=1.5"),
    bad("device", "device=tpu"),
    bad("device", "device=cuda:0", marks=pytest.mark.skipif(CUDA, reason="CUDA is here")),
    bad("data._target_", "data._target_=nope.missing"),
    bad("model._target_", "model._target_=nope.missing"),
    bad("optimizer._target_", "optimizer._target_=torch.optim.Nope"),
]


@pytest.mark.parametrize(("key", "overrides"), BAD)
def test_check_config_names_the_bad_key(key: str, overrides: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        check_config(compose_config(overrides))
    assert str(err.value).startswith(f"{key}=")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_a_mup_model_with_a_standard_optimizer_is_refused(optimizer: str) -> None:
    with pytest.raises(ConfigError, match=r"muP needs a muP model .* with a muP optimizer"):
        check_config(compose_config(["model=mlp_mup", f"optimizer={optimizer}"]))
    check_config(compose_config(["model=mlp_mup", f"optimizer=mu{optimizer}"]))  # its muP twin


def test_bad_config_fails_before_anything_is_written(run, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^lr=0 is invalid"):
        run("lr=0")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=resnet18"], r"^model: .*resnet18 needs image inputs \(C, H, W\)"),
        (["model.width=0"], r"^model: .*mlp needs width >= 1"),
        (["optimizer.momentum=-1"], r"^optimizer: .*momentum"),
        # A data builder's own ConfigError stays one (Hydra's instantiate would wrap it).
        (["data.test_fraction=0.9"], r"^data: test_fraction must be >= 0 and below 0.8"),
        (["data=mnist1d", "data.num_samples=10"], r"^data: num_samples must be at least 20"),
    ],
)
def test_a_model_or_optimizer_that_cannot_be_built_is_a_config_error(
    run, overrides, message
) -> None:
    with pytest.raises(ConfigError, match=message):
        run(*overrides)


@pytest.mark.parametrize("group", ["data", "model", "optimizer"])
def test_an_unknown_group_option_lists_the_options(group: str) -> None:
    with pytest.raises(
        MissingConfigException, match=rf"(?s)Could not find '{group}/nope'.*Available options"
    ):
        compose_config([f"{group}=nope"])


# --- 6. bring your own data and model -------------------------------------------------------------


def test_byo_data_is_deterministic(byo) -> None:
    a, b = byo.make_data(), byo.make_data()
    splits = as_splits(a)
    assert (splits.num_classes, splits.input_shape) == (2, (5,))
    assert (len(a["train"][0]), len(a["val"][0])) == (160, 40)
    for split in ("train", "val"):
        assert all(torch.equal(u, v) for u, v in zip(a[split], b[split], strict=True))


def test_byo_data_and_model_train_in_process(run) -> None:
    result = run(*BYO, "lr=0.1", "+model.hidden=8", "+data.n=300")
    assert not result.diverged
    assert result.val_acc > 0.9


# --- 7. the models --------------------------------------------------------------------------------

SHAPES = {
    "digits": (64,),
    "mnist1d": (40,),
    "two-channel-1d": (2, 40),
    "mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
}


def _model_cases():
    for model in ("mlp", "cnn"):
        for shape in SHAPES:
            yield model, shape
    yield "resnet18", "cifar10"
    yield "resnet18", "mnist"


@pytest.mark.parametrize(("model", "shape"), _model_cases())
def test_model_maps_a_batch_to_class_logits(model: str, shape: str) -> None:
    input_shape = SHAPES[shape]
    # Called as the contract in src/models.py says: input_shape a tuple (as `train` passes it).
    builder = instantiate(compose_config([f"model={model}"]).model, _partial_=True)
    net = builder(input_shape=input_shape, num_classes=7)
    with torch.no_grad():
        assert net.eval()(torch.randn(2, *input_shape)).shape == (2, 7)
    # And it trains (BatchNorm in train mode on 2 examples).
    net.train()(torch.randn(2, *input_shape)).sum().backward()


def test_cnn_trains_on_an_image_folder(run, tmp_path: Path) -> None:
    """Four classes of noisy solid colours, 20 images each: a colour's mean is far outside the
    pixel noise, so a CNN that learns anything gets the 16 validation images right; chance is 0.25."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {
        "red": (200, 40, 40),
        "green": (40, 200, 40),
        "blue": (40, 40, 200),
        "grey": (128,) * 3,
    }
    for cls, colour in colours.items():
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(20):
            pixels = np.asarray(colour, dtype=float) + rng.normal(0, 40, (8, 8, 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            image.save(tmp_path / "images" / cls / f"{i}.png")
    result = run(
        "data=image_folder",
        f"data.root={tmp_path / 'images'}",
        "data.image_size=8",
        "model=cnn",
        "epochs=3",
        "batch_size=8",
    )
    assert not result.diverged and len(result.val_acc_curve) == 3
    assert result.val_acc >= 0.9  # chance: 0.25


@pytest.mark.parametrize("shape", ["digits", "mnist1d"])
def test_resnet18_on_1d_input_is_a_config_error(shape: str) -> None:
    from src.models import resnet18

    with pytest.raises(ConfigError, match="resnet18 needs image inputs"):
        resnet18(input_shape=SHAPES[shape], num_classes=10)


# --- 8. the CLI, end to end -----------------------------------------------------------------------
#
# Each `python -m src.train` costs ~4-8 s, mostly imports. The runs that the selected tests read start
# together in the background when the module's first test starts, so they overlap with the
# in-process tests above; each test below then waits for its own run.


def _write_mismatched_checkpoint(cwd: Path) -> None:
    key, directory = model_key(TINY)
    path = cwd / directory / f"{key}.pt"
    path.parent.mkdir(parents=True)
    torch.save({"w": torch.zeros(3)}, path)


# name -> (overrides, setup of the working directory before the run)
CLI_RUNS: dict[str, tuple[list[str], Callable[[Path], None] | None]] = {
    "default": (["epochs=2"], None),
    "diverged": ([*TINY, "lr=1e6"], None),
    "byo": ([*BYO, "lr=0.1"], None),
}


def reads(*names: str):
    """Declares the CLI_RUNS a test reads (a parametrized test may read its `cli_run` instead)."""

    def mark(test):
        test.cli_runs = names
        return test

    return mark


def _runs_read_by(item: pytest.Item) -> set[str]:
    names = set(getattr(item.function, "cli_runs", ()))
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "cli_run" in callspec.params:
        names.add(callspec.params["cli_run"])
    return names


@pytest.fixture(scope="module", autouse=True)
def cli(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """name -> Future of `python -m src.train <CLI_RUNS[name]>`, each in its own directory, for the
    runs the selected tests read. One after another all take ~40 s, together ~15-20 s on 2 cores."""
    items = [item for item in request.session.items if item.module is request.module]
    wanted = [name for name in CLI_RUNS if any(name in _runs_read_by(item) for item in items)]
    cwds = {name: tmp_path_factory.mktemp(re.sub(r"\W", "_", name)) for name in wanted}
    for name in wanted:
        setup = CLI_RUNS[name][1]
        if setup is not None:  # before any run starts: in-process work is slow beside them
            setup(cwds[name])
    # One thread per run: much of a run's start-up is waiting, not computing.
    with ThreadPoolExecutor(max_workers=max(1, len(wanted))) as pool:
        yield {
            name: pool.submit(
                run_module, "src.train", *CLI_RUNS[name][0], cwd=cwds[name], check=False
            )
            for name in wanted
        }


@reads("default")
def test_cli_trains_digits_well_above_chance(cli) -> None:
    proc = cli["default"].result()
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"lr=0\.01 seed=0: val_acc=(\d\.\d{4}) \(\d+\.\ds\)", last)
    assert match, proc.stdout
    assert float(match[1]) > 0.5  # chance is 0.1
    assert proc.stdout.count("epoch ") == 2  # one progress line per epoch


# The refusals run in this process (conftest's train_here): the same line and exit status.


def test_cli_mismatched_checkpoint_is_one_error_line(train_here, tmp_path: Path) -> None:
    _write_mismatched_checkpoint(tmp_path)
    key, directory = model_key(TINY)
    line = error_line(train_here(*TINY, cwd=tmp_path))
    assert line.startswith(f"error: checkpoint {directory}/{key}.pt does not match the model")


@reads("diverged")
def test_cli_reports_divergence_and_exits_zero(cli) -> None:
    proc = cli["diverged"].result()
    assert proc.returncode == 0, proc.stderr
    assert "val_acc=DIVERGED (returned 0.0)" in proc.stdout


@pytest.mark.parametrize("key, value", [("lr", "0"), ("data._target_", "nope.missing")])
def test_cli_bad_value_is_one_error_line_naming_the_key(train_here, tmp_path, key, value) -> None:
    line = error_line(train_here(*TINY, f"{key}={value}", cwd=tmp_path))
    assert line.startswith(f"error: {key}=")


def test_cli_unknown_data_option_lists_the_available_ones(train_here, tmp_path) -> None:
    proc = train_here(*TINY, "data=nope", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Could not find 'data/nope'" in proc.stderr
    assert re.search(r"Available options in 'data':\s+cifar10\s+digits", proc.stderr)


@reads("byo")
def test_cli_byo_command_from_the_readme(cli) -> None:
    proc = cli["byo"].result()
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"val_acc=(\d\.\d{4}) \(", proc.stdout)
    assert match and float(match[1]) > 0.9, proc.stdout
