"""Staged training on cached trunk features (docs/method.md#the-first-stages), with resume.

Stages: `ynet` trains both branches and their projections (average pooling); `tagynet` does the same
with the tag attention learned jointly (the prototype found that learning attention together with
the features is what pays). The context stage (`ctxynet`) trains on top of them with everything
else frozen, in context_stage.py. The trunk is always frozen (its outputs are
cached), batch norm statistics stay fixed, and the optimiser is SGD with momentum, step-decayed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from ynet_db.nn.losses import Mining, triplet_loss
from ynet_db.nn.ynet import YNet

Stage = Literal["ynet", "tagynet", "ctxynet"]
STAGES: tuple[str, ...] = ("ynet", "tagynet", "ctxynet")
FIRST_STAGES: tuple[str, ...] = ("ynet", "tagynet")


@dataclass(frozen=True)
class PairFeatures:
    """Training pairs as cached trunk features, row i of each tensor belonging to pair i."""

    street: torch.Tensor
    """Tensor[P, V, C, H, W]: V cached views of each street image."""
    shop: torch.Tensor
    """Tensor[P, C, H, W]: the pair's shop image."""
    tags: torch.Tensor
    """Tensor[P, T] multi-hot tags of the pair's product."""
    items: torch.Tensor
    """Tensor[P] int64: product index (pairs of one product are never each other's negatives)."""

    def __len__(self) -> int:
        return int(self.items.shape[0])

    def subset(self, rows: torch.Tensor) -> PairFeatures:
        return PairFeatures(self.street[rows], self.shop[rows], self.tags[rows], self.items[rows])


@dataclass(frozen=True)
class StageOptions:
    stage: Stage = "tagynet"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-5
    lr_step_epochs: int = 50
    """The learning rate drops 10x every this many epochs."""
    margin: float = 0.3
    mining: Mining = "shifted"
    shifts: int = 4
    seed: int = 0


def trainable(network: YNet, options: StageOptions) -> dict[str, torch.nn.Parameter]:
    if options.stage not in FIRST_STAGES:
        raise ValueError(f"train_stage trains {' or '.join(FIRST_STAGES)}; the context stage is context_stage.py's")
    prefixes = ["street.", "shop.", "street_projection.", "shop_projection."]
    prefixes += ["tag_attention."] if options.stage == "tagynet" else []
    return {n: p for n, p in network.named_parameters() if any(n.startswith(x) for x in prefixes)}


def batches(count: int, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(count, generator=generator)
    for start in range(0, count - 1, size):
        rows = order[start : start + size]
        if rows.numel() > 1:  # a one-pair batch has no negatives
            yield rows


def pick_views(street: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One cached view per row, at random: the augmentation of cached features."""
    views = torch.randint(street.shape[1], (street.shape[0],), generator=generator)
    return street[torch.arange(street.shape[0]), views]


def pair_loss(
    network: YNet,
    data: PairFeatures,
    rows: torch.Tensor,
    options: StageOptions,
    g: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    street = pick_views(data.street[rows], g).to(device, torch.float32)
    shop = data.shop[rows].to(device, torch.float32)
    tags = (
        data.tags[rows].to(device) if options.stage == "tagynet" else torch.zeros_like(data.tags[rows], device=device)
    )
    queries = network.street_maps(street).mean(dim=1)
    products, _ = network.shop_vectors(shop, tags)
    return triplet_loss(queries, products, options.margin, options.mining, options.shifts, data.items[rows].to(device))


def train_stage(
    network: YNet,
    data: PairFeatures,
    options: StageOptions,
    *,
    device: torch.device | str = "cpu",
    state_path: Path | None = None,
    progress: bool = True,
) -> list[float]:
    """Train one stage in place; returns the mean loss of each epoch (of this call and any resumed run).

    With `state_path`, the trainable weights, momentum and epoch are saved after every epoch, and a
    run that finds a state file of the same stage there resumes from it.
    """
    device = torch.device(device)
    network.to(device)
    params = trainable(network, options)
    for name, param in network.named_parameters():
        param.requires_grad_(name in params)
    optimizer = torch.optim.SGD(
        list(params.values()), lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay
    )
    losses, start_epoch = resume(state_path, network, optimizer, params, options) if state_path else ([], 0)
    for epoch in range(start_epoch, options.epochs):
        for group in optimizer.param_groups:
            group["lr"] = options.lr * 0.1 ** (epoch // options.lr_step_epochs)
        g = torch.Generator().manual_seed(options.seed * 100_003 + epoch)
        network.train()
        network.freeze_batchnorm()
        total, steps = 0.0, 0
        bar = tqdm(
            list(batches(len(data), options.batch_size, g)),
            desc=f"{options.stage} epoch {epoch + 1}/{options.epochs}",
            disable=not progress,
            leave=False,
        )
        for rows in bar:
            loss = pair_loss(network, data, rows, options, g, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
            bar.set_postfix(loss=f"{total / steps:.4f}")
        losses.append(total / max(steps, 1))
        if state_path:
            save_state(state_path, params, optimizer, options, epoch + 1, losses)
    network.eval()
    for param in network.parameters():
        param.requires_grad_(False)
    return losses


def save_state(
    path: Path,
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.SGD,
    options: StageOptions,
    epoch: int,
    losses: list[float],
) -> None:
    tensors = {f"param.{n}": p.detach().cpu().contiguous().clone() for n, p in params.items()}
    for name, param in params.items():
        buffer = optimizer.state.get(param, {}).get("momentum_buffer")
        if buffer is not None:
            tensors[f"momentum.{name}"] = buffer.detach().cpu().contiguous().clone()
    meta = {
        "stage": options.stage,
        "epoch": str(epoch),
        "losses": json.dumps(losses),
        "options": json.dumps(asdict(options)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata=meta)
    partial.replace(path)


def resume(
    path: Path, network: YNet, optimizer: torch.optim.SGD, params: dict[str, torch.nn.Parameter], options: StageOptions
) -> tuple[list[float], int]:
    if not path.is_file():
        return [], 0
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        if meta.get("stage") != options.stage:
            return [], 0
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(handle.get_tensor(f"param.{name}"))
                if f"momentum.{name}" in handle.keys():
                    optimizer.state[param]["momentum_buffer"] = handle.get_tensor(f"momentum.{name}").to(param.device)
    return json.loads(meta.get("losses", "[]")), int(meta.get("epoch", "0"))


@torch.inference_mode()
def fit_pca_projection(
    network: YNet, street: torch.Tensor, shop: torch.Tensor, device: torch.device | str = "cpu"
) -> None:
    """Start both projections at the PCA of the pretrained branch's pooled features (street and shop).

    The two branches are still identical copies here, so one projection shared by both keeps the
    start at pretrained quality (two random projections start near zero accuracy:
    docs/method.md#start-at-pretrained-quality).
    """
    pooled = []
    for features in (street, shop):
        for start in range(0, features.shape[0], 64):
            pooled.append(
                network.shop(features[start : start + 64].to(device, torch.float32)).mean(dim=1).cpu().double()
            )
    x = torch.cat(pooled)
    mean = x.mean(dim=0)
    covariance = (x - mean).t() @ (x - mean) / max(x.shape[0] - 1, 1)
    # A small ridge: dead ReLU6 channels and few samples make the covariance singular, and LAPACK's
    # eigh can fail to converge on it. It only orders the null space, which has no variance anyway.
    ridge = 1e-6 * float(covariance.diagonal().mean().clamp_min(1e-12))
    _, vectors = torch.linalg.eigh(covariance + ridge * torch.eye(covariance.shape[0], dtype=covariance.dtype))
    components = vectors[:, -network.config.embedding_dim :].flip(1).t()  # [D, C], largest variance first
    for projection in (network.street_projection, network.shop_projection):
        projection.linear.weight.copy_(components.float())
        projection.linear.bias.copy_((-components @ mean).float())
