"""Data builders and batching, on real components and files the tests write themselves (no network)."""

from __future__ import annotations

import inspect
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from src import data
from src.batches import Batches
from src.data import Splits, as_splits, split_size
from src.errors import ConfigError

CONF_DATA = Path(__file__).resolve().parents[1] / "conf" / "data"


# --- the YAMLs name real builders -------------------------------------------------------------


@pytest.mark.parametrize("yaml_path", sorted(CONF_DATA.glob("*.yaml")), ids=lambda p: p.stem)
def test_conf_data_targets_accept_their_keys(yaml_path: Path) -> None:
    cfg = yaml.safe_load(yaml_path.read_text())
    module, _, name = cfg.pop("_target_").rpartition(".")
    assert module == "src.data"
    params = inspect.signature(getattr(data, name)).parameters
    assert set(cfg) <= set(params), f"{name} lacks {set(cfg) - set(params)}"


# --- digits ------------------------------------------------------------------------------------


def test_digits_shapes_stratified_standardised_deterministic() -> None:
    s = data.digits()
    x_train, y_train = s.train
    x_val, y_val = s.val
    assert (len(x_train), len(x_val)) == (1437, 360)
    assert s.input_shape == (64,) and s.num_classes == 10
    assert set(y_val.tolist()) == set(range(10))
    assert x_train.mean(dim=0).abs().max() < 1e-5
    std = x_train.std(dim=0)
    varying = std > 0  # a few border pixels are always 0 in the train split
    assert torch.allclose(std[varying], torch.ones_like(std[varying]), atol=1e-4)
    again = data.digits()
    for a, b in zip(s.train + s.val, again.train + again.val, strict=True):
        assert torch.equal(a, b)


def _rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(row) for row in x.reshape(len(x), -1).tolist()}


def test_test_fraction_holds_out_a_test_split_from_train_and_keeps_val(tmp_path: Path) -> None:
    plain, held = data.digits(), data.digits(test_fraction=0.2)
    assert plain.test is None
    assert (len(held.train[1]), len(held.val[1]), len(held.test[1])) == (1078, 360, 359)
    assert torch.equal(plain.val[1], held.val[1])  # validation: the same images, same labels
    assert set(held.test[1].tolist()) == set(range(10))  # stratified
    # No image in two splits (both standardised alike: distinct images stay distinct rows).
    assert not _rows(held.test[0]) & _rows(held.train[0])
    m = data.mnist1d(num_samples=400, test_fraction=0.1, cache_dir=tmp_path)
    m0 = data.mnist1d(num_samples=400, cache_dir=tmp_path)
    assert (len(m.train[1]), len(m.val[1]), len(m.test[1])) == (280, 80, 40)
    assert torch.equal(m.val[0], m0.val[0]) and m0.test is None
    assert _rows(m.train[0]) | _rows(m.test[0]) == _rows(m0.train[0])
    assert not _rows(m.train[0]) & _rows(m.test[0])


@pytest.mark.parametrize("fraction", [-0.1, 0.8, 1.0])
def test_a_test_fraction_leaving_no_training_data_is_a_config_error(fraction: float) -> None:
    with pytest.raises(ConfigError, match="test_fraction must be >= 0 and below 0.8"):
        data.digits(test_fraction=fraction)


# --- mnist1d -----------------------------------------------------------------------------------


def test_mnist1d_generates_caches_and_reloads(tmp_path: Path) -> None:
    s = data.mnist1d(num_samples=400, train_split=0.8, data_seed=3, cache_dir=tmp_path)
    (x_train, y_train), (x_val, y_val) = s.train, s.val
    assert x_train.shape == (320, 40) and x_val.shape == (80, 40)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert s.input_shape == (40,) and s.num_classes == 10
    assert set(torch.cat([y_train, y_val]).tolist()) <= set(range(10))

    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("mnist1d-") and files[0].suffix == ".pt"
    mtime = files[0].stat().st_mtime_ns

    again = data.mnist1d(num_samples=400, train_split=0.8, data_seed=3, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == files and files[0].stat().st_mtime_ns == mtime
    for a, b in zip(s.train + s.val, again.train + again.val, strict=True):
        assert torch.equal(a, b)

    # The cache holds what generation gives: a fresh directory regenerates the same arrays.
    fresh = data.mnist1d(num_samples=400, train_split=0.8, data_seed=3, cache_dir=tmp_path / "b")
    for a, b in zip(s.train + s.val, fresh.train + fresh.val, strict=True):
        assert torch.equal(a, b)

    other = data.mnist1d(num_samples=400, train_split=0.8, data_seed=4, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("mnist1d-*.pt"))) == 2
    assert not torch.equal(other.train[0], x_train)


@pytest.mark.parametrize(
    "kwargs", [{"train_split": 1.0}, {"train_split": 0.0}, {"num_samples": 5}], ids=str
)
def test_mnist1d_rejects_bad_args(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        data.mnist1d(cache_dir=tmp_path, **kwargs)


# --- MNIST / FashionMNIST from idx files written here ------------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    # idx: big-endian magic (0x08 = uint8, then the number of dims), the dims, the raw bytes.
    magic = 0x00000800 | array.ndim
    path.write_bytes(struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes())


def _write_mnist_raw(raw: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict:
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        _write_idx(raw / name, array)
    return arrays


@pytest.mark.parametrize(
    ("builder", "folder"), [(data.mnist, "MNIST"), (data.fashion_mnist, "FashionMNIST")]
)
def test_mnist_like_reads_raw_idx_files(tmp_path: Path, builder, folder: str) -> None:
    arrays = _write_mnist_raw(tmp_path / folder / "raw")
    s = builder(root=tmp_path)
    (x_train, y_train), (x_val, y_val) = s.train, s.val
    assert x_train.shape == (20, 1, 28, 28) and x_val.shape == (10, 1, 28, 28)
    assert s.input_shape == (1, 28, 28) and s.num_classes == 10
    assert y_train.dtype == torch.int64
    assert y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert y_val.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    # Normalised by the train split's (single) channel statistics, applied to both splits.
    assert abs(x_train.mean().item()) < 1e-5 and abs(x_train.std().item() - 1) < 1e-4
    pixels = torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float() / 255
    train_pixels = torch.from_numpy(arrays["train-images-idx3-ubyte"]).float() / 255
    expected = (pixels - train_pixels.mean()) / train_pixels.std()
    assert torch.allclose(x_val[:, 0], expected, atol=1e-5)


@pytest.mark.parametrize(
    ("builder", "folder"), [(data.mnist, "MNIST"), (data.fashion_mnist, "FashionMNIST")]
)
def test_mnist_like_missing_files_is_a_one_line_config_error(
    tmp_path: Path, builder, folder: str
) -> None:
    with pytest.raises(ConfigError) as info:
        builder(root=tmp_path, download=False)
    message = str(info.value)
    assert "data.download=true" in message and str(tmp_path / folder / "raw") in message
    assert "\n" not in message


# --- CIFAR-10 ----------------------------------------------------------------------------------
# torchvision checks the md5 of every CIFAR batch file against the real dataset's, so fake files
# cannot pass offline: only the error paths (missing, and present-but-not-the-real-files) are tested.


def test_cifar10_missing_files_is_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        data.cifar10(root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message and "data.download=true" in message
    assert "\n" not in message


def test_cifar10_fake_files_fail_the_md5_check(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list("abcdefghij")}))
    with pytest.raises(ConfigError, match="corrupted"):
        data.cifar10(root=tmp_path)


# --- ImageFolder -------------------------------------------------------------------------------

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


def _write_pngs(directory: Path, per_class: int) -> None:
    for name, colour in COLOURS.items():
        (directory / name).mkdir(parents=True)
        for i in range(per_class):
            shade = tuple(max(0, c - 10 * i) for c in colour)
            Image.new("RGB", (10, 12), shade).save(directory / name / f"{i}.png")


def _assert_colours_match_labels(split, classes: list[str]) -> None:
    for i in range(split_size(split)):
        x, y = split[i]
        assert int(x.mean(dim=(1, 2)).argmax()) == "rgb".index(classes[y][0])


def test_image_folder_train_val_layout(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "train", per_class=4)
    _write_pngs(tmp_path / "val", per_class=2)
    s = data.image_folder(root=tmp_path, image_size=8, num_workers=1)
    assert s.num_classes == 3 and s.input_shape == (3, 8, 8) and s.num_workers == 1
    assert (split_size(s.train), split_size(s.val)) == (12, 6)
    x, y = s.train[0]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    _assert_colours_match_labels(s.val, sorted(COLOURS))


def test_image_folder_single_tree_is_split_stratified_and_deterministic(tmp_path: Path) -> None:
    _write_pngs(tmp_path, per_class=6)
    s = data.image_folder(root=tmp_path, image_size=8, val_fraction=0.2, split_seed=0)
    assert s.num_classes == 3 and s.input_shape == (3, 8, 8)
    assert (split_size(s.train), split_size(s.val)) == (15, 3)
    assert sorted(int(s.val[i][1]) for i in range(3)) == [0, 1, 2]
    assert not set(s.train.indices) & set(s.val.indices)
    _assert_colours_match_labels(s.train, sorted(COLOURS))
    again = data.image_folder(root=tmp_path, image_size=8, val_fraction=0.2, split_seed=0)
    assert again.val.indices == s.val.indices
    seeds = {
        tuple(data.image_folder(root=tmp_path, image_size=8, split_seed=k).val.indices)
        for k in range(4)
    }
    assert len(seeds) > 1


def test_image_folder_batches_are_seeded_and_honour_num_workers(tmp_path: Path) -> None:
    _write_pngs(tmp_path, per_class=6)
    s = data.image_folder(root=tmp_path, image_size=8)

    def run(epoch: int, num_workers: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        batches = Batches(s.train, batch_size=4, shuffle=True, seed=0, num_workers=num_workers)
        assert len(batches) == math.ceil(15 / 4)
        return list(batches.epoch(epoch))

    first = run(0)
    assert len(first) == 4 and all(x.shape[0] <= 4 and x.shape[1:] == (3, 8, 8) for x, _ in first)
    assert sum(len(y) for _, y in first) == 15
    for (xa, ya), (xb, yb) in zip(first, run(0), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Worker processes load the same batches in the same order.
    for (xa, ya), (xb, yb) in zip(first, run(0, num_workers=2), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(first, run(1), strict=True))


def test_image_folder_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        data.image_folder(root=tmp_path / "nope")
    with pytest.raises(ConfigError, match="no usable images"):
        data.image_folder(root=tmp_path)  # no class folders
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    with pytest.raises(ConfigError, match="no usable images"):
        data.image_folder(root=tmp_path)
    only_train = tmp_path / "only_train"
    _write_pngs(only_train / "train", per_class=2)
    with pytest.raises(ConfigError, match="train/ and val/"):
        data.image_folder(root=only_train)
    mismatched = tmp_path / "mismatched"
    _write_pngs(mismatched / "train", per_class=2)
    (mismatched / "val" / "red").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(mismatched / "val" / "red" / "0.png")
    with pytest.raises(ConfigError, match="same class"):
        data.image_folder(root=mismatched)


# --- Batches over tensors ----------------------------------------------------------------------


def _orders(batches: Batches, epoch: int) -> list[int]:
    return [int(v) for x, _ in batches.epoch(epoch) for v in x[:, 0]]


def test_tensor_batches_seeded_per_epoch_and_exhaustive() -> None:
    n = 10
    split = (torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.arange(n) % 3)
    batches = Batches(split, batch_size=3, shuffle=True, seed=7)
    assert len(batches) == math.ceil(n / 3) == 4
    sizes = [len(x) for x, _ in batches.epoch(0)]
    assert sizes == [3, 3, 3, 1]
    e0 = _orders(batches, 0)
    assert sorted(e0) == list(range(n))
    assert _orders(Batches(split, batch_size=3, shuffle=True, seed=7), 0) == e0
    assert _orders(batches, 0) == e0  # not dependent on how many epochs ran before
    e1 = _orders(batches, 1)
    assert sorted(e1) == list(range(n)) and e1 != e0
    assert _orders(Batches(split, batch_size=3, shuffle=True, seed=8), 0) != e0
    assert _orders(Batches(split, batch_size=3, shuffle=False), 5) == list(range(n))
    for x, y in batches.epoch(2):  # inputs and labels stay paired
        assert torch.equal(x[:, 0].long() % 3, y)


# --- as_splits: the bring-your-own-data contract -----------------------------------------------


def _pair(n: int, num_classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 5), torch.arange(n) % num_classes


def test_as_splits_accepts_dict_tuple_and_splits() -> None:
    s = as_splits({"train": _pair(8), "val": _pair(4)})
    assert isinstance(s, Splits) and s.num_classes == 3 and s.input_shape == (5,)
    s = as_splits({"train": _pair(8), "val": _pair(4), "num_classes": 7})
    assert s.num_classes == 7
    s = as_splits((_pair(8), _pair(4, num_classes=4)))
    assert s.num_classes == 4 and split_size(s.train) == 8 and split_size(s.val) == 4
    ints = (torch.zeros(6, 2, dtype=torch.uint8), torch.zeros(6, dtype=torch.int32))
    s = as_splits((ints, ints))
    assert s.train[0].dtype == torch.float32 and s.train[1].dtype == torch.int64
    assert as_splits(s) is s


@pytest.mark.parametrize(
    "bad",
    [
        {"train": _pair(8)},  # no val
        ((torch.randn(8, 5), torch.arange(7)), _pair(4)),  # 8 inputs, 7 labels
        ((torch.randn(8, 5), torch.rand(8)), _pair(4)),  # float labels
        ((torch.randn(8, 5), torch.zeros(8, 2, dtype=torch.long)), _pair(4)),  # 2-D labels
        (torch.randn(8, 5), _pair(4)),  # a bare tensor, not an (x, y) pair
        "not data",
    ],
    ids=["no-val", "length-mismatch", "float-labels", "2d-labels", "bare-tensor", "string"],
)
def test_as_splits_rejects_bad_input(bad) -> None:
    with pytest.raises(ConfigError):
        as_splits(bad)
