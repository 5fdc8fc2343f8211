"""A character-level transformer language model, trained on the Python standard library's own
source code: a user's own Hydra app whose learning rate lrsweep searches.

Nothing here knows lrsweep's trial: the app reads its config, trains, and returns the validation
loss (mean cross-entropy in nats per character). lrsweep enters in two places only: the
`hydra/sweeper: lrsweep` block of `conf/config.yaml`, and `same_initial_weights`, which gives every
run the same starting weights so that learning rates are compared from one start.

    python examples/charlm/train.py                                # one run at optim.lr
    python examples/charlm/train.py optim.lr=1e-2 steps=50         # any key can be overridden
    python examples/charlm/train.py -m                             # stage 1: a grid of LRs
    python examples/charlm/train.py -m hydra.sweeper.search=full   # the whole search and a report
"""

from __future__ import annotations

import functools
import math
import sysconfig
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lrsweep import same_initial_weights

# ---- data: the stdlib's source as one tensor of character ids -------------------------------


@functools.lru_cache(maxsize=4)
def load_text(kilobytes: int) -> str:
    """The first `kilobytes` KB of the stdlib's top-level `*.py` files, read in name order
    (deterministic for one Python version). Cached: the trials of a sweep share one process."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    limit, parts, size = kilobytes * 1024, [], 0
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text)
        if size >= limit:
            break
    return "".join(parts)[:limit]


@functools.lru_cache(maxsize=4)
def load_data(kilobytes: int, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(train ids, val ids, vocabulary size): the text encoded by its sorted set of characters,
    split by position (validation is the end of the text, never seen in training)."""
    text = load_text(kilobytes)
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = torch.tensor([index[ch] for ch in text], dtype=torch.long)
    cut = int(len(ids) * (1 - val_fraction))
    return ids[:cut], ids[cut:], len(vocab)


def windows(ids: torch.Tensor, starts: torch.Tensor, context: int) -> tuple[torch.Tensor, ...]:
    """Inputs and next-character targets for windows of `context` characters at `starts`."""
    offsets = torch.arange(context + 1)
    chunk = ids[starts[:, None] + offsets]
    return chunk[:, :-1], chunk[:, 1:]


# ---- model: a small GPT ------------------------------------------------------------------------


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then a 4x MLP, each residual."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).unbind(2)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class CharLM(nn.Module):
    """Token and position embeddings, `n_layers` blocks, a final norm and a linear head."""

    def __init__(self, vocab: int, d_model: int, n_layers: int, n_heads: int, context: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.Sequential(*(Block(d_model, n_heads) for _ in range(n_layers)))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)
        self.apply(init_weights)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        return self.head(self.ln(self.blocks(x)))


def init_weights(module: nn.Module) -> None:
    """GPT-2's initialisation: weights normal(0, 0.02), biases zero (LayerNorm keeps 1 and 0)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


# ---- training ----------------------------------------------------------------------------------


def lr_at(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over `warmup` steps (step k uses peak * k / warmup), then cosine decay
    from `peak` to `peak * min_ratio` at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup - 1)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_optimizer(model: nn.Module, optim: DictConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on the matrices only (not on biases, norms or embeddings)."""
    decay, rest = [], []
    for name, param in model.named_parameters():
        is_matrix = param.dim() == 2 and not name.startswith(("tok.", "pos."))
        (decay if is_matrix else rest).append(param)
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas))


@torch.no_grad()
def evaluate(model: nn.Module, val: torch.Tensor, cfg: DictConfig) -> float:
    """Mean cross-entropy (nats per character) over `eval_batches` fixed batches of windows,
    evenly spaced over the validation text: the same windows for every run."""
    model.eval()
    context, n = cfg.model.context, cfg.eval_batches * cfg.batch_size
    starts = torch.linspace(0, len(val) - context - 1, n).long()
    total = 0.0
    for chunk in starts.split(cfg.batch_size):
        x, y = windows(val, chunk, context)
        total += F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").item()
    model.train()
    return total / (n * context)


def initial_model(cfg: DictConfig, vocab: int) -> tuple[CharLM, Path]:
    """The model with the initial weights every run shares (saved by the first run under
    `cfg.init_dir`, loaded by the others), and their file."""
    m = cfg.model
    torch.manual_seed(cfg.init_seed)
    model = CharLM(vocab, m.d_model, m.n_layers, m.n_heads, m.context)
    # Everything that determines the initial weights, nothing that varies between runs compared.
    key = f"charlm vocab={vocab} {OmegaConf.to_yaml(m)} init_seed={cfg.init_seed}"
    return model, same_initial_weights(model, key, cfg.init_dir)


def train(cfg: DictConfig) -> float:
    """Train one model at `cfg.optim.lr`; the validation loss, or NaN once the loss diverged."""
    torch.set_num_threads(cfg.threads)
    train_ids, val_ids, vocab = load_data(cfg.data.kilobytes, cfg.data.val_fraction)
    m = cfg.model
    model, _ = initial_model(cfg, vocab)
    optimizer = build_optimizer(model, cfg.optim)
    data_order = torch.Generator().manual_seed(cfg.seed)
    for step in range(cfg.steps):
        lr = lr_at(step, cfg.optim.lr, cfg.warmup_steps, cfg.steps, cfg.optim.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = torch.randint(
            len(train_ids) - m.context - 1, (cfg.batch_size,), generator=data_order
        )
        x, y = windows(train_ids, starts, m.context)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        if not torch.isfinite(loss):
            return math.nan  # diverged: lrsweep records it as such
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return evaluate(model, val_ids, cfg)


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    val_loss = train(cfg)
    print(f"lr={cfg.optim.lr:.3g} seed={cfg.seed} val_loss={val_loss:.4f}")
    return val_loss


if __name__ == "__main__":
    main()
