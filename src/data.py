"""Datasets: what a data builder returns, its checks, and the built-in builders.

A data builder (the `_target_` of a `conf/data/*.yaml`) returns `Splits`. Small datasets are held as
tensors and batched by slicing (`src.batches.Batches`: measured 1.2-1.5x faster than a `DataLoader`
over the same tensors on this machine, `benchmarks/bench_train.py`). Datasets that do not fit in
memory are `torch.utils.data.Dataset`s and go through a `DataLoader`.

Bring your own data: point `data._target_` at any callable returning `Splits`, a dict with keys
`train`, `val` (and optionally `num_classes`), or a `(train, val)` tuple, where each split is an
`(x, y)` pair of tensors (`y` holds integer class ids) or a `Dataset` yielding `(x, y)`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from src.checkpoint import save_atomic
from src.errors import ConfigError

TensorPair = tuple[torch.Tensor, torch.Tensor]
Split = TensorPair | Dataset


@dataclass(frozen=True)
class Splits:
    """A train and a validation split, with what a model builder needs to know about them, and an
    optional test split: scored once per trial after training, never used to choose anything."""

    train: Split
    val: Split
    num_classes: int
    input_shape: tuple[int, ...]
    # DataLoader workers the builder asks for (pass to `Batches`); only Dataset splits use them.
    num_workers: int = 0
    test: Split | None = None


def split_size(split: Split) -> int:
    return len(split[0]) if isinstance(split, tuple) else len(split)


def first_example(split: Split) -> TensorPair:
    """(x, y) of a split's first example."""
    if isinstance(split, tuple):
        return split[0][0], split[1][0]
    x, y = split[0]
    return torch.as_tensor(x), torch.as_tensor(y)


def _check_pair(name: str, pair: Any) -> TensorPair:
    if not (isinstance(pair, tuple | list) and len(pair) == 2):
        raise ConfigError(f"data: split '{name}' must be an (x, y) pair of tensors or a Dataset")
    x, y = (torch.as_tensor(v) for v in pair)
    if len(x) != len(y):
        raise ConfigError(f"data: split '{name}' has {len(x)} inputs but {len(y)} labels")
    if y.dtype.is_floating_point or y.dim() != 1:
        raise ConfigError(f"data: split '{name}' labels must be a 1-D tensor of integer class ids")
    return x.float() if not x.dtype.is_floating_point else x, y.long()


def _check_not_empty(name: str, split: Split) -> None:
    if split_size(split) == 0:
        raise ConfigError(f"data: split '{name}' is empty: it needs at least one example")


def check_splits(splits: Splits) -> Splits:
    """`splits` if training on them can mean anything, else a ConfigError saying what is wrong:
    an empty split, labels outside `0..num_classes-1`, or NaN/infinite inputs (every LR would
    then look diverged). Tensor splits are checked in full; a Dataset split only for emptiness
    (reading it all would cost an epoch)."""
    for name, split in (("train", splits.train), ("val", splits.val)):
        _check_not_empty(name, split)
        if not isinstance(split, tuple):
            continue
        x, y = split
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= splits.num_classes:
            raise ConfigError(
                f"data: split '{name}' has labels in [{low}, {high}]: labels must be class ids "
                f"0..{splits.num_classes - 1} (num_classes={splits.num_classes})"
            )
        bad = int((~torch.isfinite(x.reshape(len(x), -1))).any(dim=1).sum())
        if bad:
            raise ConfigError(
                f"data: split '{name}' has NaN or infinite inputs in {bad} of {len(x)} examples: "
                "drop or impute them (every LR would look diverged)"
            )
    return splits


def as_splits(obj: Any) -> Splits:
    """Normalise what a data builder returned (see the module docstring for the contract), checked
    by `check_splits`."""
    if isinstance(obj, Splits):
        return check_splits(obj)
    num_classes = None
    if isinstance(obj, dict):
        if "train" not in obj or "val" not in obj:
            raise ConfigError("data: a data builder's dict must have keys 'train' and 'val'")
        train, val, num_classes = obj["train"], obj["val"], obj.get("num_classes")
    elif isinstance(obj, tuple | list) and len(obj) == 2:
        train, val = obj
    else:
        raise ConfigError(
            "data: a data builder must return Splits, {'train', 'val'[, 'num_classes']} "
            "or a (train, val) tuple"
        )
    train = train if isinstance(train, Dataset) else _check_pair("train", train)
    val = val if isinstance(val, Dataset) else _check_pair("val", val)
    test = obj.get("test") if isinstance(obj, dict) else None
    if test is not None and not isinstance(test, Dataset):
        test = _check_pair("test", test)
    _check_not_empty("train", train)
    _check_not_empty("val", val)
    x0, _ = first_example(train)
    if num_classes is None:
        if not isinstance(train, tuple):
            raise ConfigError("data: a Dataset split needs 'num_classes' in the builder's dict")
        num_classes = int(max(train[1].max(), val[1].max() if isinstance(val, tuple) else 0)) + 1
    return check_splits(Splits(train, val, int(num_classes), tuple(x0.shape), test=test))


def standardised(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    num_classes: int,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> Splits:
    """Tensor splits scaled by the train split's per-feature mean and std (std 0 counts as 1)."""
    x_train = torch.as_tensor(np.asarray(x_train), dtype=torch.float32)
    mean = x_train.mean(dim=0)
    std = x_train.std(dim=0)
    std[std == 0] = 1.0

    def scaled(x: np.ndarray, y: np.ndarray) -> TensorPair:
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        return (x - mean) / std, torch.as_tensor(np.asarray(y), dtype=torch.long)

    return Splits(
        train=scaled(x_train, y_train),
        val=scaled(x_val, y_val),
        num_classes=num_classes,
        input_shape=tuple(x_train.shape[1:]),
        test=None if test is None else scaled(*test),
    )


def carve_test(
    x: np.ndarray, y: np.ndarray, n_test: int, seed: int
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """(x, y) less a stratified test split of `n_test` examples, and that split (None for 0). The
    test split comes out of the training examples, so the validation split, which chooses the LR,
    stays what it is without one."""
    if n_test == 0:
        return x, y, None
    from sklearn.model_selection import train_test_split

    try:
        x, x_test, y, y_test = train_test_split(
            x, y, test_size=n_test, stratify=y, random_state=seed
        )
    except ValueError as err:
        raise ConfigError(f"data: cannot split {n_test} test examples off: {err}") from None
    return x, y, (x_test, y_test)


def _check_test_fraction(test_fraction: float, other: float = 0.0) -> float:
    """`test_fraction` in [0, 1), leaving more than `other` (the validation fraction) to train."""
    value = float(test_fraction)
    if not 0.0 <= value < 1.0 - other:
        raise ConfigError(
            f"data: test_fraction must be >= 0 and below {1.0 - other:g} (what validation "
            f"leaves), got {test_fraction}"
        )
    return value


def digits(val_fraction: float = 0.2, split_seed: int = 0, test_fraction: float = 0.0) -> Splits:
    """sklearn's 8x8 digits (1797 images, ships with scikit-learn): fixed stratified split;
    `test_fraction` > 0 also holds out that fraction of all images as a test split, taken from
    the training images (`carve_test`)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    test_fraction = _check_test_fraction(test_fraction, float(val_fraction))
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=val_fraction, stratify=y, random_state=split_seed
    )
    n_test = round(test_fraction * len(y))
    x_train, y_train, test = carve_test(x_train, y_train, n_test, split_seed)
    return standardised(x_train, y_train, x_val, y_val, num_classes=10, test=test)


def _check_fraction(key: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ConfigError(f"data: {key} must be strictly between 0 and 1, got {value}")
    return value


def mnist1d(
    num_samples: int = 5000,
    train_split: float = 0.8,
    data_seed: int = 42,
    test_fraction: float = 0.0,
    *,
    cache_dir: str | os.PathLike,
) -> Splits:
    """MNIST-1D (40-long 1-D signals, 10 classes), generated locally and cached under `cache_dir`
    (the config passes `paths.data_cache`).

    Built with `mnist1d.data.make_dataset` because `get_dataset` downloads. Generating 5000 samples
    takes ~1.1 s here (plus ~1.1 s to import mnist1d); a cache hit loads in milliseconds. The cache
    file is named by a hash of (num_samples, train_split, seed) and written atomically, so parallel
    trials can share it. Same args, same arrays: make_dataset seeds numpy's global RNG itself.

    Not passed through `standardised`: make_dataset already centres and scales the whole set
    (mean 0, std 1), while a per-position rescale changes inputs by up to ~30% (position stds are
    0.77-1.12) and departs from the published benchmark.

    `test_fraction` > 0 holds out that fraction of all samples as a test split, taken from the
    training samples (`carve_test`, seeded by `data_seed`).
    """
    num_samples = int(num_samples)
    if num_samples < 20:
        raise ConfigError(f"data: num_samples must be at least 20 (2 per class), got {num_samples}")
    train_split = _check_fraction("train_split", train_split)
    test_fraction = _check_test_fraction(test_fraction, 1.0 - train_split)
    args_set = {"num_samples": num_samples, "train_split": train_split, "seed": int(data_seed)}
    key = hashlib.sha256(json.dumps(args_set, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"mnist1d-{key}.pt"

    arrays = None
    if path.is_file():
        try:
            arrays = torch.load(path, weights_only=True)
        except Exception:  # unreadable cache (e.g. another torch version): regenerate it
            arrays = None
    if arrays is None:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples, args.train_split, args.seed = num_samples, train_split, int(data_seed)
        d = make_dataset(args)
        arrays = {
            "x_train": torch.as_tensor(d["x"], dtype=torch.float32),
            "y_train": torch.as_tensor(d["y"], dtype=torch.long),
            "x_val": torch.as_tensor(d["x_test"], dtype=torch.float32),
            "y_val": torch.as_tensor(d["y_test"], dtype=torch.long),
        }
        if len(arrays["y_train"]) == 0 or len(arrays["y_val"]) == 0:
            raise ConfigError(
                f"data: train_split={train_split} leaves an empty split of {num_samples} samples"
            )
        save_atomic(arrays, path)
    x_train, y_train, test = carve_test(
        arrays["x_train"].numpy(),
        arrays["y_train"].numpy(),
        round(test_fraction * num_samples),
        int(data_seed),
    )
    return Splits(
        train=(torch.as_tensor(x_train), torch.as_tensor(y_train)),
        val=(arrays["x_val"], arrays["y_val"]),
        num_classes=10,
        input_shape=tuple(arrays["x_train"].shape[1:]),
        test=None if test is None else (torch.as_tensor(test[0]), torch.as_tensor(test[1])),
    )


def _image_splits(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    num_classes: int,
) -> Splits:
    """uint8 (N, C, H, W) images to [0, 1], then normalised by the train split's per-channel stats."""
    x_train = x_train.float().div_(255)
    x_val = x_val.float().div_(255)
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True)
    std[std == 0] = 1.0
    return Splits(
        train=(x_train.sub_(mean).div_(std), torch.as_tensor(y_train, dtype=torch.long)),
        val=(x_val.sub_(mean).div_(std), torch.as_tensor(y_val, dtype=torch.long)),
        num_classes=num_classes,
        input_shape=tuple(x_train.shape[1:]),
    )


def _torchvision_pair(cls: type, folder: str, name: str, root: str, download: bool) -> tuple:
    """torchvision's (train, test) sets, its 'not found' RuntimeError made a one-line ConfigError."""
    try:
        return cls(root, train=True, download=download), cls(root, train=False, download=download)
    except (RuntimeError, OSError) as e:
        if download:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"data: could not download {name} into {folder} ({reason}); "
                f"put the files there and set data.download=false"
            ) from e
        raise ConfigError(
            f"data: {name} files not found (or corrupted) under {folder}; "
            f"put them there or set data.download=true"
        ) from e


def _mnist_like(cls_name: str, name: str, root: str | os.PathLike, download: bool) -> Splits:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    probe = cls.__new__(cls)  # only to ask torchvision where it looks: its `raw_folder`
    probe.root = os.path.expanduser(os.fspath(root))
    train, val = _torchvision_pair(cls, probe.raw_folder, name, root, bool(download))
    return _image_splits(
        train.data.unsqueeze(1), train.targets, val.data.unsqueeze(1), val.targets, num_classes=10
    )


def mnist(root: str | os.PathLike = "data", download: bool = False) -> Splits:
    """MNIST (1, 28, 28), held as tensors: 60k train / 10k val (torchvision's test set)."""
    return _mnist_like("MNIST", "MNIST", root, download)


def fashion_mnist(root: str | os.PathLike = "data", download: bool = False) -> Splits:
    """Fashion-MNIST (1, 28, 28), held as tensors: 60k train / 10k val (torchvision's test set)."""
    return _mnist_like("FashionMNIST", "FashionMNIST", root, download)


def cifar10(root: str | os.PathLike = "data", download: bool = False) -> Splits:
    """CIFAR-10 (3, 32, 32), held as tensors (~0.7 GB as float32): 50k train / 10k val."""
    from torchvision.datasets import CIFAR10

    folder = os.path.join(os.path.expanduser(os.fspath(root)), CIFAR10.base_folder)
    train, val = _torchvision_pair(CIFAR10, folder, "CIFAR-10", root, bool(download))
    # torchvision keeps CIFAR as uint8 (N, H, W, C) numpy arrays.
    x_train = torch.from_numpy(train.data).permute(0, 3, 1, 2)
    x_val = torch.from_numpy(val.data).permute(0, 3, 1, 2)
    return _image_splits(
        x_train, torch.tensor(train.targets), x_val, torch.tensor(val.targets), len(train.classes)
    )


def _to_rgb(img: Any) -> Any:
    # Module-level (not a lambda) so DataLoader workers can pickle the transform.
    return img.convert("RGB")


def _stratified_indices(
    targets: list[int], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Per class, a seeded shuffle then round(val_fraction * n) to val (at least 1 when n >= 2).

    Unlike sklearn's `train_test_split`, this accepts classes of one image (kept for train).
    """
    rng = np.random.default_rng(seed)
    targets_np = np.asarray(targets)
    train_idx: list[int] = []
    val_idx: list[int] = []
    for c in np.unique(targets_np):
        idx = rng.permutation(np.flatnonzero(targets_np == c))
        n_val = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, round(val_fraction * len(idx))))
        val_idx += idx[:n_val].tolist()
        train_idx += idx[n_val:].tolist()
    return sorted(train_idx), sorted(val_idx)


def image_folder(
    root: str | os.PathLike,
    image_size: int = 32,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    num_workers: int = 0,
) -> Splits:
    """Images in class folders, read lazily through a DataLoader (they may not fit in memory).

    `root/train/<class>/` and `root/val/<class>/` when both exist, else one `root/<class>/` tree
    split `val_fraction` for validation, stratified and fixed by `split_seed`. Every image becomes
    RGB at image_size x image_size, so one model fits any folder.
    """
    from torch.utils.data import Subset
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    root_path = Path(os.path.expanduser(os.fspath(root)))
    if not root_path.is_dir():
        raise ConfigError(f"data: root={root} is not a directory of class folders")
    image_size = int(image_size)
    if image_size < 1:
        raise ConfigError(f"data: image_size must be a positive integer, got {image_size}")
    num_workers = int(num_workers)
    if num_workers < 0:
        raise ConfigError(f"data: num_workers must be >= 0, got {num_workers}")
    transform = transforms.Compose(
        [_to_rgb, transforms.Resize((image_size, image_size)), transforms.ToTensor()]
    )

    def load(directory: Path) -> Any:
        try:
            return ImageFolder(directory, transform=transform)
        except FileNotFoundError as e:
            detail = str(e).strip().splitlines()[0] if str(e).strip() else "no images"
            raise ConfigError(f"data: no usable images under {directory} ({detail})") from e

    has_train, has_val = (root_path / "train").is_dir(), (root_path / "val").is_dir()
    if has_train != has_val:
        raise ConfigError(
            f"data: root={root} has only one of train/ and val/; give both, "
            "or one tree of class folders"
        )
    if has_train:
        train, val = load(root_path / "train"), load(root_path / "val")
        if train.classes != val.classes:
            raise ConfigError(
                f"data: {root_path / 'train'} and {root_path / 'val'} must hold the same class "
                f"folders, got {train.classes} and {val.classes}"
            )
        classes = train.classes
    else:
        val_fraction = _check_fraction("val_fraction", val_fraction)
        full = load(root_path)
        train_idx, val_idx = _stratified_indices(full.targets, val_fraction, int(split_seed))
        if not val_idx:
            raise ConfigError(
                f"data: val_fraction={val_fraction} leaves no validation images under {root}"
            )
        train, val, classes = Subset(full, train_idx), Subset(full, val_idx), full.classes
    return Splits(
        train=train,
        val=val,
        num_classes=len(classes),
        input_shape=(3, image_size, image_size),
        num_workers=num_workers,
    )
