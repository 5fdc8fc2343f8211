# %% [markdown]
# # The learning rate of a plain PyTorch loop
#
# No Hydra, no config files: a training function `train(lr, seed) -> validation loss`, and
# `lrsweep.search` sweeps it (stage 1: a log-uniform grid; stage 2: a finer grid around the best;
# then the best few LRs again on fresh seeds) and reports the LR to use.
#
# The task: a small MLP regressing a smooth function of 8 inputs (synthetic data, generated here:
# nothing to download), trained with SGD + momentum and scored by the mean squared error on held-out
# data. Run it as a script (`python examples/plain_pytorch.py`) or cell by cell in an editor that
# knows `# %%` cells. `LRSWEEP_EXAMPLE_SIZE=tiny` makes everything small (the tests use it).

# %%
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

import lrsweep

TINY = os.environ.get("LRSWEEP_EXAMPLE_SIZE") == "tiny"
N_TRAIN, N_VAL = (256, 128) if TINY else (2000, 500)
EPOCHS, BATCH, WIDTH = (2, 64, 16) if TINY else (20, 32, 64)
OUT = Path("outputs")

# %% [markdown]
# ## The data: y = a smooth nonlinear function of x, plus noise
#
# Fixed once (numpy seed 0): every run sees the same training and validation sets; a run's `seed`
# changes only the order of its batches.

# %%
rng = np.random.default_rng(0)
x = rng.normal(size=(N_TRAIN + N_VAL, 8)).astype(np.float32)
w = rng.normal(size=(8,)).astype(np.float32)
y = np.sin(x @ w / 2) + 0.5 * x[:, 0] * x[:, 1] + 0.1 * rng.normal(size=len(x)).astype(np.float32)
x_train, y_train = torch.from_numpy(x[:N_TRAIN]), torch.from_numpy(y[:N_TRAIN, None])
x_val, y_val = torch.from_numpy(x[N_TRAIN:]), torch.from_numpy(y[N_TRAIN:, None])

# %% [markdown]
# ## One training run
#
# `same_initial_weights` saves the first run's initial weights under `outputs/plain_init/` and
# loads them in every later run with the same key: all learning rates start from the same weights,
# so the differences between runs are the learning rate's doing, not the initialisation's.


# %%
def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(8, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 1)
    )


def train(lr: float, seed: int) -> float:
    """Train at `lr` (linear warmup over the first epoch, then constant); the validation MSE, or
    NaN when the loss diverged (lrsweep records such a run as diverged)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = make_model()
    lrsweep.same_initial_weights(model, f"plain-mlp width={WIDTH}", OUT / "plain_init")
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    order = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(N_TRAIN / BATCH)
    step = 0
    for _ in range(EPOCHS):
        for batch in torch.randperm(N_TRAIN, generator=order).split(BATCH):
            step += 1
            for group in optimizer.param_groups:
                group["lr"] = lr * min(1.0, step / steps_per_epoch)
            loss = nn.functional.mse_loss(model(x_train[batch]), y_train[batch])
            if not torch.isfinite(loss):
                return math.nan
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return nn.functional.mse_loss(model(x_val), y_val).item()


print(f"one run at lr=0.01: val_loss={train(0.01, seed=0):.4f}")

# %% [markdown]
# ## The search
#
# `points` LRs log-uniform in [low, high] (stage 1), then a finer grid around the best (stage 2),
# then the best few re-run on fresh seeds (the confirm step). Every run is a trial in an Optuna
# study (`outputs/plain.db`): running this cell again runs only what is missing.

# %%
result = lrsweep.search(
    train,
    low=1e-4,
    high=1.0,
    points=4 if TINY else 10,
    seeds=[0],
    study="plain-pytorch-tiny" if TINY else "plain-pytorch",
    storage="sqlite:///outputs/plain.db",
    direction="minimize",
    metric="val_loss",
    search="full",
    report_dir="outputs/reports/plain-pytorch-tiny" if TINY else "outputs/reports/plain-pytorch",
)
print(f"best lr={result.lr:.3g}: val_loss {result.mean:.4f} ± {result.std:.4f}")
print(f"good range (within one std of the best): {result.good_range}")

# %%
print(result.trials.head(20))
figure_path = OUT / "plain_pytorch_curve.png"
result.figure.savefig(figure_path, dpi=120)
print(f"figure: {figure_path}")
