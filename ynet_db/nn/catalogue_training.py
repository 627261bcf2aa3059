"""TagYNet from the catalogue alone (issue 9 item 5): no street photos, only products, photos and tags.

- Street side: each product's street views are made by augmentation of its own catalogue photo
  (augment.street_view: the garment cut from its backdrop, crop, scale, perspective, turn, backgrounds,
  garments and occluders cut from other catalogue photos, light, blur, JPEG), or are its second photo
  where it has one.
- Tag attention learns where the tagged garment is from the tags themselves: a linear head predicts
  the product's tags (multi-hot BCE) from the attention-pooled shop map, so with several garments
  in a photo only attention on the right one predicts its tags.
- The street views are cut from where that attention rests (`crop_views`): a catalogue photo may show
  the product beside other garments, a shopper's photo shows the product, so after `tag_epochs` of
  tag prediction alone each photo is cropped to the box its attention picks out (`attended_box`),
  narrowed on a plain backdrop to the outline of the garment under the attention's peak
  (`garment_box`), before it is made into street views. Without the crop the street branch learns
  to match whole multi-garment scenes, which no shopper photographs.
- Distillation keeps both branches' embeddings near the pretrained start (cosine to the PCA-start
  network's vectors of the same input): a model trained on generated composites alone forgot what
  transfers to real photos (top-20 0.62 -> 0.33,
  docs/method.md#generated-data-does-not-transfer-to-real-photos).
- The matched control (`use_tags=False`) is the same training with the attention kept uniform
  (zero tags to it); the tag head then reads the average-pooled map.
"""

from __future__ import annotations

import copy
import hashlib
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from ynet_db.data.records import Box, ImageRef, Product
from ynet_db.nn.augment import STREET_VIEWS, check_recipe, street_view
from ynet_db.nn.checkpoint import Checkpoint, CheckpointInfo, differing_tensors, save_checkpoint
from ynet_db.nn.config import ModelConfig
from ynet_db.nn.features import cached_trunk_features, default_reader
from ynet_db.nn.garment_cut import garment_mask, mask_box
from ynet_db.nn.losses import triplet_loss
from ynet_db.nn.model import build_network
from ynet_db.nn.tags import TagVocabulary
from ynet_db.nn.training import batches, fit_pca_projection
from ynet_db.nn.ynet import YNet


@dataclass(frozen=True)
class CataloguePlan:
    epochs: int = 8
    views: int = 2
    """Street views made per product (each a fresh street_view of its photo)."""
    embedding_dim: int = 256
    batch_size: int = 32
    lr: float = 0.01
    margin: float = 0.3
    tag_weight: float = 1.0
    distill_weight: float = 1.0
    use_tags: bool = True
    """False: the matched control, the same training with uniform attention (and so no crop)."""
    crop_views: bool = True
    """Make the street views from the garment the tag attention finds, not from the whole photo."""
    tag_epochs: int = 4
    """Epochs of tag prediction alone (tag attention and head) before the crops are taken."""
    street_views: str = STREET_VIEWS
    """How the street views are made (augment.STREET_VIEW_RECIPES)."""
    name: str = "ynet-lite0-catalogue"
    seed: int = 0
    input_size: int = 224
    map_size: int = 7
    """Side of the branches' map at input_size (tests use small images)."""

    def __post_init__(self) -> None:
        check_recipe(self.street_views)  # refused before hours of caching, not after


@dataclass(frozen=True)
class CatalogueFeatures:
    """Cached trunk features of a catalogue's training rows: one row per product."""

    street: torch.Tensor
    """Tensor[P, V, C, H, W]: V street views."""
    shop: torch.Tensor
    """Tensor[P, C, H, W]: the product's (first) catalogue photo."""
    tags: torch.Tensor
    """Tensor[P, T] multi-hot."""
    items: list[str] = field(default_factory=list)


def street_reader(
    refs: Sequence[ImageRef], seed: int, cut_out: bool, recipe: str = STREET_VIEWS
) -> Callable[[ImageRef], Image.Image]:
    """Reads a ref as a street view of it; backgrounds and occluders come from two other catalogue photos.
    `cut_out`: the garment is cut from its backdrop (the refs are crops to one garment, `attended_refs`).

    Called in order by the trunk cache, so the views are the same for the same refs and seed.
    """
    rng = random.Random(seed)
    read = default_reader()

    def reader(ref: ImageRef) -> Image.Image:
        others = [read(rng.choice(refs)) for _ in range(2)]
        return street_view(read(ref), others, rng, cut_out=cut_out, recipe=recipe)

    return reader


def training_rows(products: dict[str, Product]) -> tuple[list[str], list[ImageRef], list[ImageRef]]:
    """(items, shop photo, street source): the second photo where a product has one, else the first again."""
    items, shop, street = [], [], []
    for item, product in sorted(products.items()):
        photos = [ImageRef(ref.path) for ref in product.shop_images]
        if photos:
            items.append(item)
            shop.append(photos[0])
            street.append(photos[1] if len(photos) > 1 else photos[0])
    return items, shop, street


@dataclass(frozen=True)
class ShopSide:
    """A catalogue's training rows before any street view is made: the photos' trunk features and tags."""

    items: list[str]
    shop_refs: list[ImageRef]
    street_refs: list[ImageRef]
    shop: torch.Tensor
    """Tensor[P, C, H, W]."""
    tags: torch.Tensor
    """Tensor[P, T] multi-hot."""


def cache_shop_side(
    network: YNet,
    products: dict[str, Product],
    vocabulary: TagVocabulary,
    *,
    cache_dir: Path | None,
    device: torch.device,
    progress: bool = True,
) -> ShopSide:
    items, shop_refs, street_refs = training_rows(products)
    if not items:
        raise ValueError("the catalogue has no product with a readable image reference")
    shop = cached_trunk_features(
        network.trunk,
        network.config,
        shop_refs,
        cache_dir,
        progress="catalogue photos" if progress else None,
        device=device,
    )
    tags = vocabulary.encode([products[i].tags for i in items]).multi_hot
    return ShopSide(items, shop_refs, street_refs, shop.features[:, 0], tags)


def cache_street_views(
    network: YNet,
    side: ShopSide,
    *,
    views: int,
    seed: int,
    crop: bool,
    cache_dir: Path | None,
    device: torch.device,
    recipe: str = STREET_VIEWS,
    progress: bool = True,
) -> CatalogueFeatures:
    """`views` street views of each row's street photo, cut first to its attended garment when `crop`."""
    street_refs = side.street_refs
    if crop:
        street_refs = attended_refs(network, side, cache_dir=cache_dir, device=device)
    # The views are made by a reader the cache key does not see: a folder of their own, per recipe
    # and seed (the key does see the crop boxes).
    view_dir = cache_dir / f"street-views-{recipe}-seed{seed}" if cache_dir else None
    street = cached_trunk_features(
        network.trunk,
        network.config,
        street_refs * views,
        view_dir,
        reader=street_reader(side.shop_refs, seed, cut_out=crop, recipe=recipe),
        progress="street views" if progress else None,
        device=device,
    )
    count = len(side.items)
    stacked = street.features[:, 0].view(views, count, *street.features.shape[2:]).transpose(0, 1)
    return CatalogueFeatures(stacked, side.shop, side.tags, side.items)


def cache_catalogue(
    network: YNet,
    products: dict[str, Product],
    vocabulary: TagVocabulary,
    *,
    views: int,
    seed: int,
    cache_dir: Path | None,
    device: torch.device,
    crop: bool = False,
    recipe: str = STREET_VIEWS,
    progress: bool = True,
) -> CatalogueFeatures:
    side = cache_shop_side(network, products, vocabulary, cache_dir=cache_dir, device=device, progress=progress)
    return cache_street_views(
        network,
        side,
        views=views,
        seed=seed,
        crop=crop,
        cache_dir=cache_dir,
        device=device,
        recipe=recipe,
        progress=progress,
    )


CROP_KEEP = 0.1
"""Cells at or above this share of the attention's peak make the crop. The tag attention is peaked (after
four epochs its largest cell holds about half the weight), so a garment's other cells score far below
its peak. Chosen on the generated benchmark's training products against the release's product boxes,
which training never reads (`bench/catalogue.py` reports the overlap): peak cell inside the product's
box 0.80; mean IoU 0.37 at 0.5 of the peak (a crop of one or two cells), 0.46 at 0.1."""


def attended_box(weights: torch.Tensor, width: int, height: int, keep: float = CROP_KEEP, margin: float = 0.5) -> Box:
    """The pixel box of a photo's map cells whose attention is at least `keep` of the largest, grown by
    `margin` cells on each side (the map is coarse: a garment's edge lies inside its border cells).

    weights [H, W] over the map's cells, which tile the photo evenly."""
    rows, cols = weights.shape
    picked = (weights >= keep * weights.max()).nonzero()
    top, left = picked.min(dim=0).values.tolist()
    bottom, right = (picked.max(dim=0).values + 1).tolist()
    cell_w, cell_h = width / cols, height / rows
    return Box(
        max(0, round((left - margin) * cell_w)),
        max(0, round((top - margin) * cell_h)),
        min(width, round((right + margin) * cell_w)),
        min(height, round((bottom + margin) * cell_h)),
    )


@torch.inference_mode()
def attended_refs(network: YNet, side: ShopSide, *, cache_dir: Path | None, device: torch.device) -> list[ImageRef]:
    """Each row's street photo with the box its product's tag attention picks out on it."""
    features = side.shop
    if side.street_refs != side.shop_refs:  # second photos: their own maps
        features = cached_trunk_features(
            network.trunk, network.config, side.street_refs, cache_dir, device=device
        ).features[:, 0]
    network.to(device).eval()
    read = default_reader()
    refs = []
    for start in range(0, len(side.items), 64):
        x = features[start : start + 64].to(device, torch.float32)
        _, weights = network.shop_vectors(x, side.tags[start : start + 64].to(device))
        side_cells = network.config.map_size
        for offset, cells in enumerate(weights.view(-1, side_cells, side_cells).cpu()):
            ref = side.street_refs[start + offset]
            try:
                image = read(ref)
            except (ValueError, OSError):  # unreadable: the trunk cache records why; nothing to cut
                refs.append(ref)
                continue
            refs.append(ImageRef(ref.path, garment_box(image, cells)))
    return refs


def garment_box(image: Image.Image, weights: torch.Tensor) -> Box:
    """The attended box (`attended_box`), narrowed on a plain backdrop to the garment under the attention's
    peak: the box holds what the attention covers, often a neighbour's sleeve too; the outline does not."""
    box = attended_box(weights, image.width, image.height)
    if bool((weights >= CROP_KEEP * weights.max()).all()):  # no peak to follow (an untrained attention)
        return box
    row, col = divmod(int(weights.argmax()), weights.shape[1])
    peak = ((col + 0.5) * image.width / weights.shape[1], (row + 0.5) * image.height / weights.shape[0])
    mask = garment_mask(image, at=peak)
    if mask is None:
        return box
    inside = Image.new("L", mask.size, 0)
    inside.paste(mask.crop((box.left, box.top, box.right, box.bottom)), (box.left, box.top))
    return mask_box(inside) or box


def learn_tag_attention(
    network: YNet, head: nn.Linear, side: ShopSide, plan: CataloguePlan, device: torch.device, progress: bool
) -> list[float]:
    """Tag prediction alone (the tag attention and the head; every other weight frozen): where the
    attention must rest for the pooled map to predict the product's tags. Returns the epoch losses."""
    params = only_trainable(network, [network.tag_attention.weight, *head.parameters()])
    optimizer = torch.optim.Adam(params, lr=1e-3)
    with torch.no_grad():
        maps = torch.cat(
            [network.shop(side.shop[s : s + 64].to(device, torch.float32)) for s in range(0, len(side.items), 64)]
        )

    def loss_of(rows: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        pooled, _ = network.tag_attention(maps[rows], side.tags[rows].to(device))
        return F.binary_cross_entropy_with_logits(head(pooled), side.tags[rows].to(device))

    losses = []
    for epoch in tqdm(range(plan.tag_epochs), desc="tag attention", disable=not progress, leave=False):
        g = torch.Generator().manual_seed(plan.seed * 100_003 + 50_000 + epoch)
        losses.append(epoch_loss(optimizer, list(batches(len(side.items), plan.batch_size, g)), loss_of, g))
    return losses


def only_trainable(network: YNet, params: list[nn.Parameter]) -> list[nn.Parameter]:
    """Freeze every weight of `network`, then unfreeze `params` (which may include others, e.g. a head)."""
    for param in network.parameters():
        param.requires_grad_(False)
    for param in params:
        param.requires_grad_(True)
    return params


def epoch_loss(
    optimizer: torch.optim.Optimizer,
    rows: Iterable[torch.Tensor],
    loss_of: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    g: torch.Generator,
) -> float:
    """One pass of SGD steps over the batches `rows`; the mean loss."""
    total, steps = 0.0, 0
    for batch in rows:
        loss = loss_of(batch, g)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, steps = total + float(loss.detach()), steps + 1
    return total / max(steps, 1)


@torch.inference_mode()
def teacher_vectors(start: YNet, data: CatalogueFeatures, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The start network's normalised vectors: street [P, V, D] (every view) and shop [P, D] (average pooling)."""
    start.to(device).eval()
    street, shop = [], []
    no_tags = torch.zeros(1, start.tag_attention.weight.shape[1], device=device)
    for s in range(0, len(data.items), 64):
        views = data.street[s : s + 64]
        flat = start.street_maps(views.flatten(0, 1).to(device, torch.float32)).mean(dim=1)
        street.append(F.normalize(flat, dim=-1).view(views.shape[0], views.shape[1], -1).cpu())
        x = data.shop[s : s + 64].to(device, torch.float32)
        shop.append(F.normalize(start.shop_vectors(x, no_tags.expand(x.shape[0], -1))[0], dim=-1).cpu())
    return torch.cat(street), torch.cat(shop)


def distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cosine between the student's vectors and the (normalised) teacher's."""
    return (1.0 - (F.normalize(student, dim=-1) * teacher).sum(-1)).mean()


def catalogue_loss(
    network: YNet,
    head: nn.Linear,
    data: CatalogueFeatures,
    teachers: tuple[torch.Tensor, torch.Tensor],
    rows: torch.Tensor,
    plan: CataloguePlan,
    g: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    views = torch.randint(data.street.shape[1], (len(rows),), generator=g)
    street = data.street[rows, views].to(device, torch.float32)
    tags = data.tags[rows].to(device)
    queries = network.street_maps(street).mean(dim=1)
    pooled, _ = network.tag_attention(
        network.shop(data.shop[rows].to(device, torch.float32)), tags if plan.use_tags else tags * 0
    )
    products = network.shop_projection(pooled)
    loss = triplet_loss(queries, products, plan.margin, groups=rows.to(device))
    loss = loss + plan.tag_weight * F.binary_cross_entropy_with_logits(head(pooled), tags)
    street_teacher, shop_teacher = teachers
    distilled = distillation(queries, street_teacher[rows, views].to(device)) + distillation(
        products, shop_teacher[rows].to(device)
    )
    return loss + plan.distill_weight * distilled


def train_from_catalogue(
    products: dict[str, Product],
    plan: CataloguePlan,
    *,
    device: torch.device | str = "cpu",
    cache_dir: Path | None = None,
    progress: bool = True,
) -> tuple[YNet, TagVocabulary, list[float]]:
    """Train TagYNet (or its control) on the catalogue's products alone; returns network, vocabulary, epoch losses."""
    device = torch.device(device)
    vocabulary = TagVocabulary.build(p.tags for p in products.values())
    config = ModelConfig(
        name=plan.name,
        projection="linear",
        embedding_dim=plan.embedding_dim,
        input_size=plan.input_size,
        map_size=plan.map_size,
    )
    network = build_network(config, len(vocabulary)).to(device)
    side = cache_shop_side(network, products, vocabulary, cache_dir=cache_dir, device=device, progress=progress)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(plan.seed)  # the same seed, the same crops: the view cache is keyed on them
        head = nn.Linear(config.map_channels, len(vocabulary)).to(device)
    crop = plan.use_tags and plan.crop_views
    if crop:
        learn_tag_attention(network, head, side, plan, device, progress)
    data = cache_street_views(
        network,
        side,
        views=plan.views,
        seed=plan.seed,
        crop=crop,
        cache_dir=cache_dir,
        device=device,
        recipe=plan.street_views,
        progress=progress,
    )
    fit_pca_projection(network, data.street[:, 0], data.shop, device)
    teachers = teacher_vectors(copy.deepcopy(network), data, device)
    learned = ("street", "shop") + (("tag_attention.",) if plan.use_tags else ())
    params = [p for n, p in network.named_parameters() if n.startswith(learned)]
    params = only_trainable(network, [*params, *head.parameters()])
    optimizer = torch.optim.SGD(params, lr=plan.lr, momentum=0.9, weight_decay=1e-5)

    def loss_of(rows: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return catalogue_loss(network, head, data, teachers, rows, plan, g, device)

    losses = []
    for epoch in range(plan.epochs):
        g = torch.Generator().manual_seed(plan.seed * 100_003 + epoch)
        network.train()
        network.freeze_batchnorm()
        rows = list(batches(len(data.items), plan.batch_size, g))
        losses.append(
            epoch_loss(optimizer, tqdm(rows, desc=f"epoch {epoch + 1}", disable=not progress, leave=False), loss_of, g)
        )
    network.eval()
    for param in network.parameters():
        param.requires_grad_(False)
    return network.cpu(), vocabulary, losses


def catalogue_products(source: Path) -> tuple[dict[str, Product], list[str]]:
    """A catalogue's products from an import file (CSV or JSON Lines) or a dataset's training split.

    Returns the products and the rows it could not use as 'file:line: reason' (remote images are not
    fetched for training: a shop trains on its own copies of the photos).
    """
    if source.is_dir():
        from ynet_db.data import load_dataset

        return dict(load_dataset(source).split("train").products), []
    from ynet_db.models.evaluate import catalogue_file

    dataset, problems = catalogue_file(source)
    return dict(dataset.products), problems


def split_products(
    products: dict[str, Product], share: float, seed: int
) -> tuple[dict[str, Product], dict[str, Product]]:
    """(train, held out): `share` of the products, chosen by seed, are kept for the check."""
    order = sorted(products)
    random.Random(seed).shuffle(order)
    held = set(order[: round(len(order) * share)])
    return {i: p for i, p in products.items() if i not in held}, {i: p for i, p in products.items() if i in held}


def held_out_check(
    trained: YNet,
    vocabulary: TagVocabulary,
    held: dict[str, Product],
    *,
    seed: int,
    cache_dir: Path | None,
    device: torch.device,
    crop: bool = False,
    recipe: str = STREET_VIEWS,
) -> dict[str, object]:
    """Catalogue mode on products training never saw: each held-out product's street view (made as in
    training, another seed, cut to the trained attention's box when `crop`) searched among their photos,
    by the trained model and by the shipped default."""
    from ynet_db.models.evaluate import report
    from ynet_db.nn.fit import CachedSplit, cached_ranking

    items, _, _ = training_rows(held)
    if len(items) < 2:
        raise ValueError(f"the held-out check needs at least 2 products with an image, got {len(items)}")
    data = cache_catalogue(
        trained,
        held,
        vocabulary,
        views=1,
        seed=seed + 7919,
        cache_dir=cache_dir,
        device=device,
        crop=crop,
        recipe=recipe,
        progress=False,
    )
    categories = [held[i].category for i in items]
    tags = [held[i].tags for i in items]
    split = CachedSplit(data.street, data.shop, items, categories, tags, data.shop, items, tags)
    default = build_network(ModelConfig(), 0)
    trained_report = report(cached_ranking(trained, split, vocabulary, device=device))
    default_report = report(cached_ranking(default, split, vocabulary, use_tags=False, device=device))
    beats = trained_report["top_k"]["1"] - default_report["top_k"]["1"] > default_report["standard_error"]["1"]
    beats = bool(beats and trained_report["top_k"]["20"] >= default_report["top_k"]["20"])
    return {
        "queries": len(items),
        "trained": trained_report["top_k"],
        "default": default_report["top_k"],
        "standard_error": default_report["standard_error"],
        "beats_default": beats,
    }


def catalogue_hash(products: dict[str, Product]) -> str:
    digest = hashlib.sha256()
    for item, product in sorted(products.items()):
        digest.update(
            f"{item}|{'|'.join(product.tags)}|{'|'.join(str(r.path) for r in product.shop_images)}\n".encode()
        )
    return digest.hexdigest()


def fit_from_catalogue(
    products: dict[str, Product],
    out_dir: Path,
    plan: CataloguePlan,
    *,
    holdout: float = 0.2,
    device: torch.device | str = "cpu",
    cache_dir: Path | None = None,
    progress: bool = True,
) -> Checkpoint:
    """Train on the catalogue minus a held-out share, check on that share against the shipped default,
    and write OUT/model.safetensors with the check as its evidence (metrics 'catalogue_check')."""
    device = torch.device(device)
    train, held = split_products(products, holdout, plan.seed)
    network, vocabulary, losses = train_from_catalogue(
        train, plan, device=device, cache_dir=cache_dir, progress=progress
    )
    crop = plan.use_tags and plan.crop_views
    check = held_out_check(
        network,
        vocabulary,
        held,
        seed=plan.seed,
        cache_dir=cache_dir,
        device=device,
        crop=crop,
        recipe=plan.street_views,
    )
    metrics = {"trained_from": "catalogue", "catalogue_losses": losses, "catalogue_check": check, "plan": asdict(plan)}
    info = CheckpointInfo(network.config, vocabulary, catalogue_hash(train), metrics, False)
    base = build_network(network.config, len(vocabulary)).state_dict()
    return save_checkpoint(out_dir / "model.safetensors", info, differing_tensors(network.state_dict(), base))
