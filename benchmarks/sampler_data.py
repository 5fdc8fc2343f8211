"""The two extra data sets of benchmarks/bench_samplers.py, as data builders of the built-in trial
(`'~data' +data._target_=sampler_data.<name>`): both offline, small enough for 2 CPU cores.

- `synth`: sklearn's `make_classification`, 4000 examples, 40 features (15 informative), 8
  classes, 3% flipped labels: a tabular problem whose optimum is not the digits one;
- `cancer`: sklearn's breast cancer set (569 examples, 30 features, 2 classes, ships with
  scikit-learn): a small validation split (114), so a noisy score.
Both: a fixed stratified 80/20 split, features standardised on the training split.
"""

from __future__ import annotations

from src.data import Splits, standardised


def _split(x, y, num_classes: int) -> Splits:
    from sklearn.model_selection import train_test_split

    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    return standardised(x_train, y_train, x_val, y_val, num_classes=num_classes)


def synth() -> Splits:
    """make_classification, 8 classes (module docstring)."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=4000,
        n_features=40,
        n_informative=15,
        n_redundant=5,
        n_classes=8,
        n_clusters_per_class=2,
        class_sep=1.0,
        flip_y=0.03,
        random_state=0,
    )
    return _split(x, y, 8)


def cancer() -> Splits:
    """sklearn's breast cancer set (module docstring)."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    return _split(x, y, 2)
