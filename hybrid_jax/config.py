"""Typed, frozen configuration and the named presets (`paper`, `quick`, `test`).

A preset is data: every difference between a laptop run and the brief's run lives in
the values below, never in a branch of the code. Sub-configs hold exactly the fields
of the function or module they parameterise.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; raised before any work starts."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class Geometry:
    """Image side, Model B's square patches and Model A's square blocks, in pixels (brief: 32, 8, 16).

    The one value every module asks for image shape, AR steps and the block grid (layout
    functions: `hybrid_jax.geometry`). Patches and blocks tile the image in raster order.
    """

    image_size: int = 32
    patch_size: int = 8  # Model B: one AR step per patch
    block_size: int = 16  # Model A: one DDPM chain per block
    channels: int = 3  # RGB: every data source, PNG and the labeler's statistics assume it

    def __post_init__(self):
        _check(min(self.image_size, self.patch_size, self.block_size) > 0,
               f"geometry sizes must be > 0, got image {self.image_size}, patch {self.patch_size}, "
               f"block {self.block_size}")
        _check(self.image_size % self.patch_size == 0,
               f"geometry.image_size={self.image_size} must be divisible by geometry.patch_size={self.patch_size}")
        _check(self.image_size % self.block_size == 0,
               f"geometry.image_size={self.image_size} must be divisible by geometry.block_size={self.block_size}")
        _check(self.num_patches >= 2, f"geometry needs at least 2 patches (AR steps) for the probe, got "
                                      f"{self.num_patches}; use a smaller geometry.patch_size")
        _check(self.channels == 3, f"geometry.channels must be 3 (RGB images), got {self.channels}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)

    @property
    def patches_per_side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Model B's AR steps: one per patch."""
        return self.patches_per_side ** 2

    @property
    def patch_dim(self) -> int:
        """Length of one flattened patch (row, column, channel)."""
        return self.patch_size * self.patch_size * self.channels

    @property
    def blocks_per_side(self) -> int:
        return self.image_size // self.block_size

    @property
    def num_blocks(self) -> int:
        """Model A's blocks, generated one after another."""
        return self.blocks_per_side ** 2


ALL_CLASSES = "all"  # data.class_name for the ten CIFAR-10 classes
CIFAR10_CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer",
                                    "dog", "frog", "horse", "ship", "truck")  # label order of the CIFAR-10 files


@dataclass(frozen=True)
class DataConfig:
    """Which images the study trains on; `hybrid_jax.data.resolve_source` turns it into a source."""

    # a CIFAR-10 class, or a label name of the tfds:NAME data set; several comma-separated ("dog,cat,horse"),
    # or "all" (the ten CIFAR-10 classes; with data.path=tfds:NAME, every label name of that data set, resolved
    # by `data.resolve_all_classes` where the run starts). One class: unconditional models; several: conditional
    class_name: str = "dog"
    max_images: int = 5000  # cap on training images of each class (brief: 5,000)
    # "" = automatic: $HYBRID_JAX_CIFAR10, CIFAR-10 prepared in tfds, the official tarball (cached, or
    # downloaded once unless offline), else the stand-in. Or: a tarball / extracted folder, tfds:NAME, stand-in
    path: str = ""
    holdout: int = 200  # real images of each class held out of training for labeler validation / FD
    offline: bool = False  # never download (as $HYBRID_JAX_OFFLINE=1); nothing local -> the stand-in

    @property
    def classes(self) -> tuple[str, ...]:
        """The chosen classes in the order given: class label i (data, samplers, seeds) is classes[i]."""
        if self.class_name.strip() == ALL_CLASSES:
            return CIFAR10_CLASSES
        return tuple(c.strip() for c in self.class_name.split(","))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __post_init__(self):
        names = [c.strip() for c in self.class_name.split(",")]
        _check(all(names), f"data.class_name={self.class_name!r} has an empty class name; write e.g. dog,cat")
        _check(len(set(names)) == len(names), f"data.class_name={self.class_name!r} names a class twice")
        _check(self.max_images > 0, f"data.max_images must be > 0, got {self.max_images}")
        _check(self.holdout >= 0, f"data.holdout must be >= 0, got {self.holdout}")
        _check(self.path.strip() != "tfds:", "data.path=tfds: needs a data set name, e.g. tfds:cifar10")


@dataclass(frozen=True)
class UNetConfig:
    """Fields of `hybrid_jax.models.unet.UNet` (DDPM-CIFAR style)."""

    base_channels: int = 128
    channel_mults: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    num_groups: int = 32
    dtype: str = "float32"  # compute dtype; params stay float32

    def __post_init__(self):
        _check(self.base_channels > 0, "unet.base_channels must be > 0")
        _check(self.base_channels % self.num_groups == 0,
               f"unet.base_channels={self.base_channels} must be divisible by num_groups={self.num_groups}")
        _check(len(self.channel_mults) >= 1, "unet.channel_mults must not be empty")
        _check(0.0 <= self.dropout < 1.0, f"unet.dropout must be in [0, 1), got {self.dropout}")
        _check(self.dtype in ("float32", "bfloat16"), f"unet.dtype must be float32 or bfloat16, got {self.dtype}")


def _check_transformer(name: str, cfg) -> None:
    """A transformer section's shared fields: some layers, heads divide the width, a known compute dtype."""
    _check(cfg.num_layers > 0, f"{name}.num_layers must be > 0")
    _check(cfg.width % cfg.num_heads == 0, f"{name}.width={cfg.width} must be divisible by num_heads={cfg.num_heads}")
    _check(cfg.dtype in ("float32", "bfloat16"), f"{name}.dtype must be float32 or bfloat16, got {cfg.dtype}")


@dataclass(frozen=True)
class DecoderConfig:
    """Fields of `hybrid_jax.models.decoder.Decoder` (causal patch transformer)."""

    num_layers: int = 6
    width: int = 512
    num_heads: int = 8
    mlp_ratio: int = 4
    dropout: float = 0.0
    dtype: str = "float32"

    def __post_init__(self):
        _check_transformer("decoder", self)


@dataclass(frozen=True)
class MADFormerConfig:
    """Fields of `hybrid_jax.models.madformer.MADFormer`: `num_layers` layers, the last `diffusion_layers` of them
    run at every diffusion step of a block, the others once per block (AR over blocks)."""

    num_layers: int = 12
    diffusion_layers: int = 6
    width: int = 384
    num_heads: int = 6
    mlp_ratio: int = 4
    dtype: str = "float32"

    def __post_init__(self):
        _check(0 < self.diffusion_layers < self.num_layers,
               f"madformer.diffusion_layers={self.diffusion_layers} must be in [1, num_layers={self.num_layers})")
        _check_transformer("madformer", self)


LR_DECAYS = ("constant", "cosine")  # train.decay: the learning rate after warmup (`hybrid_jax.train.learning_rate`)


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe (`hybrid_jax.train`). The brief fixes Adam, its learning rate and the epochs; the
    rest (warmup, decay, EMA, flips) is ours, off by default."""

    epochs: int = 1
    batch_size: int = 128
    lr: float = 3e-4
    grad_clip: float = 1.0  # global gradient-norm clipping
    warmup_steps: int = 0  # linear warmup of the learning rate over the first steps (0: none)
    decay: str = "constant"  # after warmup: "constant" or "cosine" (to 0 at the last step)
    ema_decay: float = 0.0  # fixed EMA decay of the params; 0 disables EMA
    ema_power: float = 0.0  # > 0: power-function EMA (EDM2), decay (1 - 1/t)^(1 + ema_power) at step t
    hflip: bool = False  # random horizontal flips of the training images
    ckpt_every: int = 1000  # steps between orbax checkpoints (and one at the end)
    log_every: int = 50
    seed: int = 0

    @property
    def ema(self) -> bool:
        """Whether the params are averaged (the samplers and the saved params then use the average)."""
        return self.ema_decay > 0 or self.ema_power > 0

    def __post_init__(self):
        _check(self.epochs > 0, f"train.epochs must be > 0, got {self.epochs}")
        _check(self.batch_size > 0, f"train.batch_size must be > 0, got {self.batch_size}")
        _check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _check(self.grad_clip > 0, f"train.grad_clip must be > 0, got {self.grad_clip}")
        _check(self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(self.decay in LR_DECAYS, f"train.decay must be one of {', '.join(LR_DECAYS)}, got {self.decay!r}")
        _check(0.0 <= self.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        _check(self.ema_power >= 0, f"train.ema_power must be >= 0, got {self.ema_power}")
        _check(not (self.ema_decay > 0 and self.ema_power > 0),
               "train.ema_decay and train.ema_power are two kinds of EMA; set one of them (the other 0)")
        _check(self.ckpt_every > 0, f"train.ckpt_every must be > 0, got {self.ckpt_every}")


@dataclass(frozen=True)
class ModelAConfig:
    """Blockwise DDPM over the geometry's blocks (brief: 4 of 16x16), `steps_per_block` DDPM steps each, of a
    trained chain of `num_timesteps` (0: steps_per_block, the brief's) linear-schedule timesteps, respaced."""

    unet: UNetConfig = UNetConfig()
    steps_per_block: int = 200
    num_timesteps: int = 0  # the trained chain's length; > steps_per_block: a longer chain, sampled respaced
    scan_unroll: int = 1
    min_snr_gamma: float = 0.0  # > 0: min-SNR-gamma loss weighting (Hang et al. 2023), min(SNR, g) / SNR; 0: plain
    train: TrainConfig = TrainConfig(epochs=500)
    snapshots: int = 0  # sampling params kept at this many evenly spaced steps (the last: the end), for the curves

    def __post_init__(self):
        _check(self.steps_per_block > 0, f"model_a.steps_per_block must be > 0, got {self.steps_per_block}")
        _check(self.snapshots >= 0, f"model_a.snapshots must be >= 0, got {self.snapshots}")
        _check(self.num_timesteps == 0 or self.num_timesteps >= self.steps_per_block,
               f"model_a.num_timesteps must be 0 (= steps_per_block) or >= steps_per_block={self.steps_per_block}, "
               f"got {self.num_timesteps}")
        _check(self.min_snr_gamma >= 0, f"model_a.min_snr_gamma must be >= 0, got {self.min_snr_gamma}")
        _check(self.scan_unroll > 0, "model_a.scan_unroll must be > 0")

    @property
    def timesteps(self) -> int:
        """Length of the trained chain, which every step budget respaces (the full budget: steps_per_block)."""
        return self.num_timesteps or self.steps_per_block


@dataclass(frozen=True)
class ModelBConfig:
    """Causal patch transformer (stage 1) of Model B."""

    decoder: DecoderConfig = DecoderConfig()
    temperature: float = 0.25
    train: TrainConfig = TrainConfig(epochs=250)
    snapshots: int = 0  # as model_a.snapshots; equal to corrector.snapshots (B's curve pairs them by index)

    def __post_init__(self):
        _check(self.temperature >= 0, f"model_b.temperature must be >= 0, got {self.temperature}")
        _check(self.snapshots >= 0, f"model_b.snapshots must be >= 0, got {self.snapshots}")


@dataclass(frozen=True)
class CorrectorConfig:
    """Shallow diffusion corrector (stage 2) of Model B: noise to `start_step`, denoise back."""

    unet: UNetConfig = UNetConfig(base_channels=64, num_groups=32)
    num_timesteps: int = 100
    start_step: int = 30
    scan_unroll: int = 1
    min_snr_gamma: float = 0.0  # as model_a.min_snr_gamma
    train: TrainConfig = TrainConfig(epochs=150)
    snapshots: int = 0  # as model_a.snapshots

    def __post_init__(self):
        _check(self.snapshots >= 0, f"corrector.snapshots must be >= 0, got {self.snapshots}")
        _check(self.min_snr_gamma >= 0, f"corrector.min_snr_gamma must be >= 0, got {self.min_snr_gamma}")
        _check(self.num_timesteps > 0, f"corrector.num_timesteps must be > 0, got {self.num_timesteps}")
        _check(0 < self.start_step <= self.num_timesteps,
               f"corrector.start_step must be in (0, num_timesteps={self.num_timesteps}], got {self.start_step}")


@dataclass(frozen=True)
class SeedsConfig:
    """Seeds whose A and B images are generated, featurised and labeled."""

    num_seeds: int = 600
    batch_size: int = 64
    base_seed: int = 0

    def __post_init__(self):
        _check(self.num_seeds > 1, f"seeds.num_seeds must be > 1, got {self.num_seeds}")
        _check(self.batch_size > 0, f"seeds.batch_size must be > 0, got {self.batch_size}")


@dataclass(frozen=True)
class LabelerConfig:
    """Automated quality labels (`hybrid_jax.quality`, docs/labeler.md).

    Score: a discriminator (boosted trees on natural-image statistics and the features of a small
    CIFAR-10 classifier trained here) that tells real images of the class from degraded copies
    and from other classes, plus `content_weight` x log p(class | image), mapped to [0, 1] on the
    scale of real images (0.5 at the `calibration_quantile` quantile of cross-fitted reference
    images, `temperature` x their IQR per logistic unit). Validated leave-one-family-out.

    Absolute rule (default): A_needed iff quality(A) - quality(B) > tau, with tau the
    `margin_quantile` quantile of |quality gap| over pairs of held-out real images. Two real
    images are "about the same" by construction, so 0.9 calls B "clearly worse" only when the gap
    is larger than 90 % of real-vs-real gaps: for A and B of equal quality about (1 - 0.9) / 2 = 5 %
    of seeds are then marked A_needed by chance (like a one-sided 5 % test), while clear failures
    still are for most seeds. Higher q: fewer false A_needed, more missed degradations. Rank rule
    (`a_needed_share` > 0): that share of seeds with the largest gaps is A_needed whatever the
    gap; only for models too weak for the absolute scale to mean much.
    """

    k: int = 5  # neighbours of the previous labeler's k-NN realism, reported as the validation baseline
    margin_quantile: float = 0.9  # tau = this quantile of |quality gap| between held-out real images
    a_needed_share: float = 0.0  # > 0: rank rule instead, this share of seeds with the largest gap
    # the CIFAR-10 classifier (content); trained on all ten classes where the data source has them
    classifier_widths: tuple[int, ...] = (32, 64, 128)  # conv widths of its three stages
    embed_dim: int = 32  # embedding width (the content features; the FD features use it)
    images_per_class: int = 2000  # cap on training images of each other class
    other_holdout: int = 50  # images of each other class held out of all training, for the wrong-class check
    train: TrainConfig = TrainConfig(epochs=30, batch_size=64, lr=2e-3, ckpt_every=200, log_every=50)
    content_weight: float = 0.25  # beta: weight of log p(class | image) in the score's log-odds
    # the degradation discriminator (boosted trees) and the score's scale
    negatives_per_cell: int = 60  # degraded reference images per (family, strength); other-class images per level
    trees: int = 200
    tree_depth: int = 3
    tree_lr: float = 0.1
    calibration_folds: int = 3  # cross-fitting folds of the reference images for the score's scale
    calibration_quantile: float = 0.05  # quality 0.5 at this quantile of the reference images' log-odds
    temperature: float = 0.5  # logistic scale in units of the reference images' log-odds IQR
    # optional: Inception-v3 pool features from a weights file (hybrid_jax/quality/inception.py); "" = off
    inception_weights: str = ""
    inception_width: float = 1.0  # 1.0: the real network (smaller only for tests)
    inception_size: int = 299  # input size the images are resized to
    seed: int = 0

    def __post_init__(self):
        _check(self.k > 0, f"labeler.k must be > 0, got {self.k}")
        _check(0.0 <= self.margin_quantile <= 1.0,
               f"labeler.margin_quantile must be in [0, 1], got {self.margin_quantile}")
        _check(0.0 <= self.a_needed_share < 1.0, f"labeler.a_needed_share must be in [0, 1), got {self.a_needed_share}")
        _check(len(self.classifier_widths) >= 1 and all(w > 0 for w in self.classifier_widths),
               f"labeler.classifier_widths must be positive, got {self.classifier_widths}")
        _check(self.embed_dim > 0 and self.images_per_class > 0 and self.other_holdout > 0,
               "labeler.embed_dim, images_per_class and other_holdout must be > 0")
        _check(self.content_weight >= 0, f"labeler.content_weight must be >= 0, got {self.content_weight}")
        _check(self.negatives_per_cell > 0 and self.trees > 0 and self.tree_depth > 0 and self.tree_lr > 0,
               "labeler.negatives_per_cell, trees, tree_depth and tree_lr must be > 0")
        _check(self.calibration_folds >= 2, f"labeler.calibration_folds must be >= 2, got {self.calibration_folds}")
        _check(0.0 < self.calibration_quantile < 1.0,
               f"labeler.calibration_quantile must be in (0, 1), got {self.calibration_quantile}")
        _check(self.temperature > 0, f"labeler.temperature must be > 0, got {self.temperature}")
        _check(self.inception_width > 0 and self.inception_size >= 75,
               "labeler.inception_width must be > 0 and inception_size >= 75")


@dataclass(frozen=True)
class RouterConfig:
    """Gradient-boosting router read off B's first `prefix_steps` AR steps.

    The router study (`hybrid_jax.routing.crossfit.run_study`) runs the whole recipe (leave-one-out
    ablation -> final fit) inside every CV fold, every random split and once on all seeds,
    so no reported number saw its test seeds during feature selection. The ablation of one
    recipe screens F + 1 column sets (all, then each leave-one-out set; plus the kept set)
    with one fit per inner fold: at paper scale (600 seeds x 24 features; 10 folds + 30
    splits + 1 deployed = 41 recipes) 2 inner folds make ~2,100 screening fits beside the
    41 final fits. At the final model's 2,000 trees (~5-8 s per fit on this 2-core CPU,
    overhead-bound) the screen alone would take 3-5 core-hours. Screening fits of
    `ablation_estimators` = 50 trees (same depth, learning rate and seed) bring the whole
    study to 195 s on 2 idle cores (527 s with 3 inner folds while other jobs shared the
    cores; BENCHMARKS.md). The screen only ranks column sets by pooled out-of-fold
    precision; every final and reported model uses `n_estimators` trees.
    """

    prefix_steps: int = 12
    n_estimators: int = 2000
    max_depth: int = 4
    learning_rate: float = 0.05
    threshold: float = 0.55
    sweep: tuple[float, ...] = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70)
    n_splits: int = 30
    test_fraction: float = 0.2
    cv_folds: int = 10
    ablation: bool = True
    ablation_folds: int = 2  # inner stratified folds of the ablation screen, on each recipe's training rows
    ablation_estimators: int = 50  # trees per screening fit, capped at n_estimators; 0 = n_estimators (cost: docstring)
    n_jobs: int = 0  # worker processes for the study's fits; 0 = every core this process may use
    seed: int = 0
    continuations: int = 4  # fresh finishes of each seed's prefix for the probe's ceiling (`routing.ceiling`); 0 = off
    # fit on the mean quality of those finishes (binarised at the training rows' cheap_ok share), not on the labels:
    # ours, not the brief's (`crossfit.denoised_targets`); evaluated on the labels all the same
    denoise: bool = False

    @property
    def screen_estimators(self) -> int:
        """Trees of one ablation screening fit: ablation_estimators (0 = n_estimators), at most n_estimators."""
        return min(self.ablation_estimators or self.n_estimators, self.n_estimators)

    def __post_init__(self):
        _check(self.prefix_steps >= 1, f"router.prefix_steps must be >= 1, got {self.prefix_steps}")
        _check(self.continuations >= 0, f"router.continuations must be >= 0, got {self.continuations}")
        _check(not self.denoise or self.continuations >= 1,
               "router.denoise needs router.continuations >= 1 (the finishes whose mean quality it learns)")
        _check(0.0 <= self.threshold <= 1.0, f"router.threshold must be in [0, 1], got {self.threshold}")
        _check(all(0.0 <= t <= 1.0 for t in self.sweep), f"router.sweep values must be in [0, 1], got {self.sweep}")
        _check(0.0 < self.test_fraction < 1.0, f"router.test_fraction must be in (0, 1), got {self.test_fraction}")
        _check(self.n_estimators > 0 and self.max_depth > 0, "router.n_estimators and max_depth must be > 0")
        _check(self.cv_folds >= 2 and self.n_splits >= 1, "router.cv_folds must be >= 2 and n_splits >= 1")
        _check(self.ablation_folds >= 2, f"router.ablation_folds must be >= 2, got {self.ablation_folds}")
        _check(self.ablation_estimators >= 0,
               f"router.ablation_estimators must be >= 0 (0 = n_estimators), got {self.ablation_estimators}")
        _check(self.n_jobs >= 0, f"router.n_jobs must be >= 0 (0 = all cores), got {self.n_jobs}")


@dataclass(frozen=True)
class CostConfig:
    """Timed evaluation of the strategies (brief: N = 50 images on a T4).

    Every strategy runs its work in batches of `batch_size` and is charged per real image
    (see `hybrid_jax.study.cost`); seconds are the median of `repeats` interleaved rounds.
    """

    num_images: int = 96  # seeds timed (the first ones); passes, FLOPs and quality use every seed
    batch_size: int = 32
    repeats: int = 3
    bootstrap: int = 2000  # bootstrap resamples for the 95 % intervals

    def __post_init__(self):
        _check(self.num_images > 0 and self.repeats > 0 and self.batch_size > 0,
               "cost.num_images, cost.batch_size and cost.repeats must be > 0")
        _check(self.bootstrap >= 100, f"cost.bootstrap must be >= 100 resamples, got {self.bootstrap}")


@dataclass(frozen=True)
class BlockwiseOptions:
    """Model A's options in the allocation (`hybrid_jax.generators.blockwise`): its step budgets per block (the
    trained chain respaced; its full budget `model_a.steps_per_block` is always one), and A's own probe: the first
    `probe_steps` steps of block 0 on the `probe_budget`-step chain, which A's options "after probe" continue with
    their budget's remaining steps (`model_a.make_probed_sampler`)."""

    budgets: tuple[int, ...] = (200, 100, 50, 25, 10)
    probe_budget: int = 10
    probe_steps: int = 2
    # progressive distillation (stage `distill`): DDIM on `distill_steps` steps per block of the trained chain
    # (respaced) is the teacher, halved `halvings` times (paper 128 -> 8 in 4 rounds; 0: none)
    distill_steps: int = 128
    halvings: int = 4

    def __post_init__(self):
        _check(len(self.budgets) > 0 and all(b > 0 for b in self.budgets),
               f"blockwise.budgets must be positive step counts, got {self.budgets}")
        _check(0 < self.probe_steps < self.probe_budget,
               f"blockwise.probe_steps must be in [1, probe_budget), got {self.probe_steps} of {self.probe_budget}")
        _check(self.halvings >= 0, f"blockwise.halvings must be >= 0, got {self.halvings}")
        _check(self.halvings == 0 or 2 ** (self.halvings - 1) < self.distill_steps,
               f"blockwise.halvings={self.halvings} halves blockwise.distill_steps={self.distill_steps} below one step")


@dataclass(frozen=True)
class ARCorrectorOptions:
    """Model B's options in the allocation (`hybrid_jax.generators.ar_corrector`): corrector depths (noise the AR
    image to step d, d steps back; its trained `corrector.start_step` is always one)."""

    depths: tuple[int, ...] = (0, 10, 30, 60)
    halvings: int = 3  # progressive distillation of the trained corrector's steps (stage `distill`; 30 -> 4; 0: none)

    def __post_init__(self):
        _check(all(d >= 0 for d in self.depths), f"ar_corrector.depths must be >= 0, got {self.depths}")
        _check(self.halvings >= 0, f"ar_corrector.halvings must be >= 0, got {self.halvings}")


@dataclass(frozen=True)
class MADNetworkConfig:
    """MADFormer's trained network (stage `madformer`, pinned by the work-dir guard): the transformer, its patch side
    (tokens per block: (block_size / patch_size)^2), its trained chain and the AR guess's loss weight (the source's
    0.1), trained with the same recipe fields as the others."""

    model: MADFormerConfig = MADFormerConfig()
    patch_size: int = 2
    num_timesteps: int = 1000
    ar_weight: float = 0.1
    train: TrainConfig = TrainConfig(epochs=250)
    snapshots: int = 0


@dataclass(frozen=True)
class MADFormerOptions:
    """MADFormer's family (`generators.madformer`): its network and its options, one per diffusion step count per
    block (0: the decoded AR guess)."""

    network: MADNetworkConfig = MADNetworkConfig()
    steps: tuple[int, ...] = (50, 20, 10, 0)
    probe_steps: int | None = None  # its own probe: block 0 drawn with this many steps and read; None: no probe

    def __post_init__(self):
        n = self.network
        _check(self.probe_steps is None or 0 <= self.probe_steps <= n.num_timesteps,
               f"madformer.probe_steps={self.probe_steps} must be in [0, madformer.network.num_timesteps="
               f"{n.num_timesteps}]")
        _check(all(0 <= s <= n.num_timesteps for s in self.steps),
               f"madformer.steps {self.steps} must be in [0, madformer.network.num_timesteps={n.num_timesteps}]")
        _check(len(self.steps) > 0, "madformer.steps must name at least one option")


@dataclass(frozen=True)
class TokenTransformerConfig:
    """Fields of `hybrid_jax.models.token_transformer.TokenTransformer` (a timestep per token)."""

    num_layers: int = 12
    width: int = 384
    num_heads: int = 6
    mlp_ratio: int = 4
    dtype: str = "float32"

    def __post_init__(self):
        _check_transformer("hyperschedule.network.model", self)


UNIT_ORDERS = ("raster", "blocks")  # a schedule's unit order: B's raster patches, or A's quadrants one after another


@dataclass(frozen=True)
class HSSchedule:
    """One hyperschedule (`hybrid_jax.hyperschedule.staggered`): the geometry's patch tokens in groups of `group`
    units of `order`, group g falling one level per step from `tau` to clean from step g x `delay` (flat: group =
    every patch, delay 0; A's blockwise: group = patches per block, delay = tau, order "blocks"; B's AR: group 1,
    delay = tau = 1; a sliding ramp: group 1, 0 < delay < tau)."""

    name: str
    group: int
    delay: int
    tau: int
    order: str = "raster"
    temperature: float = 0.0  # sampling: noise sd added where a token lands clean (B's AR: 0.25; 0: the mean)

    def __post_init__(self):
        _check(self.temperature >= 0.0, f"hyperschedule schedule {self.name!r}: temperature must be >= 0")
        _check(self.order in UNIT_ORDERS, f"hyperschedule schedule {self.name!r}: order must be one of {UNIT_ORDERS}, "
                                          f"got {self.order!r}")
        _check(self.group > 0 and self.delay >= 0 and self.tau > 0,
               f"hyperschedule schedule {self.name!r}: group > 0, delay >= 0 and tau > 0, got group={self.group}, "
               f"delay={self.delay}, tau={self.tau}")


@dataclass(frozen=True)
class HSNetworkConfig:
    """The hyperschedule family's trained network (stage `hyperschedule`, pinned by the work-dir guard): the
    transformer, its trained chain, the schedules it is trained on (a training example reads one schedule's levels
    at a random row; `random_share` of them a random timestep per token instead), context noising (with
    probability `context_noise` the settled tokens are presented at a small timestep <= `context_level`), and the
    same recipe fields as the others."""

    model: TokenTransformerConfig = TokenTransformerConfig()
    num_timesteps: int = 1000
    schedules: tuple[HSSchedule, ...] = (HSSchedule("flat", 16, 0, 50), HSSchedule("blocks", 4, 50, 50, "blocks"),
                                         HSSchedule("AR", 1, 1, 1, temperature=0.25), HSSchedule("slide", 1, 4, 20))
    random_share: float = 0.25
    context_noise: float = 0.1
    context_level: int = 20
    train: TrainConfig = TrainConfig(epochs=250)
    snapshots: int = 0
    sub_patch: int | None = None  # the network's tokens: sub-patches of this side of each unit (None: one per unit)

    def __post_init__(self):
        _check(len(self.schedules) > 0, "hyperschedule.network.schedules must name at least one schedule")
        names = [s.name for s in self.schedules]
        _check(len(set(names)) == len(names), f"hyperschedule.network.schedules names {names} must differ")
        _check(all(s.tau <= self.num_timesteps for s in self.schedules),
               f"hyperschedule schedules' tau must be <= network.num_timesteps={self.num_timesteps}")
        _check(0.0 <= self.random_share <= 1.0 and 0.0 <= self.context_noise <= 1.0,
               "hyperschedule.network.random_share and context_noise are probabilities in [0, 1]")
        _check(0 <= self.context_level < self.num_timesteps,
               f"hyperschedule.network.context_level must be in [0, {self.num_timesteps})")


@dataclass(frozen=True)
class HyperscheduleOptions:
    """The hyperschedule family (`generators.hyperschedule`): its network and its options, one per trained schedule
    and ACS k (`hybrid_jax.hyperschedule.ACS`: k tokens re-read per row at level `acs_level`, at most the schedule's
    tau (None: its tau, pure noise), within `acs_window` rows; k = 0 the plain sampler). `windowed`: each pass reads
    only its row's window of tokens after a key/value cache of the committed ones (`hyperschedule.Window`); else
    every token (the same images, more FLOPs)."""

    network: HSNetworkConfig = HSNetworkConfig()
    acs_k: tuple[int, ...] = (0, 1)
    acs_level: int | None = None
    acs_window: int = 1
    windowed: bool = True
    # its own probe: the first `probe_rows` rows of the trained schedule named `probe_schedule` (None: no probe), whose
    # state that schedule's options "after probe" continue
    probe_schedule: str | None = None
    probe_rows: int = 0

    def __post_init__(self):
        names = [s.name for s in self.network.schedules]
        _check(self.probe_schedule is None or (self.probe_schedule in names and self.probe_rows > 0),
               f"hyperschedule.probe_schedule={self.probe_schedule!r} must name a trained schedule ({names}) with "
               f"probe_rows > 0, got probe_rows={self.probe_rows}")
        _check(len(self.acs_k) > 0 and all(k >= 0 for k in self.acs_k), f"hyperschedule.acs_k {self.acs_k} must be "
                                                                           "one or more counts >= 0")
        _check(self.acs_window >= 1, "hyperschedule.acs_window must be >= 1")
        _check(self.acs_level is None or self.acs_level >= 1,
               f"hyperschedule.acs_level={self.acs_level} must be >= 1 (or None: each schedule's tau)")


@dataclass(frozen=True)
class AllocationConfig:
    """Per-seed compute allocation among the families' options (`hybrid_jax.generators`; each family's own config
    section says which: `blockwise`, `ar_corrector`). The deployed policy (`hybrid_jax.routing.policy`, saved in
    allocate/policy/): the cascade fitted on every seed, taking an option where P(acceptable) >= threshold."""

    threshold: float = 0.8

    def __post_init__(self):
        _check(0 < self.threshold < 1, f"allocation.threshold must be in (0, 1), got {self.threshold}")


@dataclass(frozen=True)
class EarlyExitConfig:
    """Early exit (`hybrid_jax.routing.early_exit`, Fast-ARDiff's pre-filter): decide after `k_early` AR steps of B
    where the layer-1 attention entropy lies in a tail whose decisions were right at least `min_accuracy` of the time
    on the training folds, else the router at k = router.prefix_steps."""

    k_early: int = 4
    min_accuracy: float = 0.8

    def __post_init__(self):
        _check(self.k_early >= 2, f"early_exit.k_early must be >= 2 (the entropy needs two steps), got {self.k_early}")
        _check(0.5 <= self.min_accuracy <= 1.0, f"early_exit.min_accuracy must be in [0.5, 1], got {self.min_accuracy}")


@dataclass(frozen=True)
class JudgeConfig:
    """A second judge for the premise, trained independently of the labeler (`hybrid_jax.quality.classifier`): a
    classifier of another architecture (GroupNorm after every convolution, other widths, its own seed) trained on
    the same ten CIFAR-10 classes; its embedding is a feature space the premise's FD and KID are also measured in,
    so the verdict does not rest on one network. Trained where the labeler's classifier is (CIFAR-10 data); its
    images are the labeler's (`labeler.images_per_class`). `widths` empty: off."""

    widths: tuple[int, ...] = (24, 48, 96)  # conv widths of its three stages
    norm_groups: int = 8  # GroupNorm groups after each convolution (the labeler's classifier has none)
    embed_dim: int = 48
    train: TrainConfig = TrainConfig(epochs=12, batch_size=64, lr=2e-3, ckpt_every=500, log_every=100, seed=1)

    def __post_init__(self):
        _check(all(w > 0 for w in self.widths), f"judge.widths must be positive, got {self.widths}")
        _check(self.norm_groups > 0 and all(w % self.norm_groups == 0 for w in self.widths),
               f"judge.norm_groups={self.norm_groups} must be > 0 and divide every width of {self.widths}")
        _check(self.embed_dim > 0, f"judge.embed_dim must be > 0, got {self.embed_dim}")


@dataclass(frozen=True)
class CurvesConfig:
    """Learning curves (stage `curves`): each option of the brief's pair sampled with its real sampler at every
    training snapshot (`<model>.snapshots`) on the first `num_seeds` seeds, scored on held-out real images."""

    num_seeds: int = 200  # seeds 0 .. num_seeds - 1 of the seeds stage (the last snapshot reuses its images)
    resamples: int = 200  # bootstrap resamples of each FD / KID / median-quality interval

    def __post_init__(self):
        _check(self.num_seeds > 1, f"curves.num_seeds must be > 1, got {self.num_seeds}")
        _check(self.resamples >= 50, f"curves.resamples must be >= 50, got {self.resamples}")


@dataclass(frozen=True)
class DistillConfig:
    """Progressive distillation (stage `distill`, `hybrid_jax.distill`) of every family's distilled sampler (each
    family's section says how many rounds: `ar_corrector.halvings`, `blockwise.halvings`): per round a student of
    half its teacher's steps, trained with `train` from its teacher's weights on the training images, and offered
    as an option of its family beside naive DDIM at its steps. The report judges them on every seed: each image's
    MSE to the teacher's DDIM image from the same start."""

    train: TrainConfig = TrainConfig(epochs=10, lr=5e-5)  # the reference's learning rate (cifar_distill.py)


@dataclass(frozen=True)
class Preset:
    name: str
    geometry: Geometry = Geometry()
    data: DataConfig = DataConfig()
    model_a: ModelAConfig = ModelAConfig()
    model_b: ModelBConfig = ModelBConfig()
    corrector: CorrectorConfig = CorrectorConfig()
    seeds: SeedsConfig = SeedsConfig()
    labeler: LabelerConfig = LabelerConfig()
    router: RouterConfig = RouterConfig()
    cost: CostConfig = CostConfig()
    allocation: AllocationConfig = AllocationConfig()
    blockwise: BlockwiseOptions = BlockwiseOptions()
    ar_corrector: ARCorrectorOptions = ARCorrectorOptions()
    curves: CurvesConfig = CurvesConfig()
    judge: JudgeConfig = JudgeConfig()
    early_exit: EarlyExitConfig = EarlyExitConfig()
    distill: DistillConfig = DistillConfig()
    madformer: MADFormerOptions | None = None  # MADFormer's family (`generators.madformer`); None: not in the study
    hyperschedule: HyperscheduleOptions | None = None  # per-token schedules (`generators.hyperschedule`); None: off
    # generator families beyond the study's own (`generators.registry.BUILTIN`), as values (`generators.Family`):
    # each carries its settings (`Family.config`) and is trained, sampled, allocated and costed like the others
    families: tuple[Any, ...] = ()
    version: int = 1  # bump when a change makes old work dirs incompatible

    def __post_init__(self):
        g = self.geometry
        _check(self.router.prefix_steps < g.num_patches,
               f"router.prefix_steps={self.router.prefix_steps} must be below the {g.num_patches} AR steps of "
               f"geometry {g.image_size}/{g.patch_size} (image/patch), so that B has steps left to finish")
        for name, unet in (("model_a", self.model_a.unet), ("corrector", self.corrector.unet)):
            down = 2 ** (len(unet.channel_mults) - 1)
            _check(g.image_size % down == 0,
                   f"geometry.image_size={g.image_size} must be divisible by {down}, the downsampling of "
                   f"{name}.unet (channel_mults {unet.channel_mults})")
        _check(max(*self.blockwise.budgets, self.blockwise.probe_budget) <= self.model_a.timesteps,
               f"blockwise.budgets {self.blockwise.budgets} or probe_budget exceed model_a's trained chain "
               f"({self.model_a.timesteps} timesteps)")
        _check(self.model_b.snapshots == self.corrector.snapshots,
               f"model_b.snapshots={self.model_b.snapshots} and corrector.snapshots={self.corrector.snapshots} must be "
               "equal: B's learning curve pairs the decoder's and the corrector's snapshots by index")
        _check(self.curves.num_seeds <= self.seeds.num_seeds,
               f"curves.num_seeds={self.curves.num_seeds} must be <= seeds.num_seeds={self.seeds.num_seeds}")
        _check(self.early_exit.k_early < self.router.prefix_steps,
               f"early_exit.k_early={self.early_exit.k_early} must be below router.prefix_steps="
               f"{self.router.prefix_steps}: the early exit decides before the router")
        _check(self.ar_corrector.halvings == 0 or 2 ** (self.ar_corrector.halvings - 1) < self.corrector.start_step,
               f"ar_corrector.halvings={self.ar_corrector.halvings} halves corrector.start_step="
               f"{self.corrector.start_step} steps below one step")
        _check(self.blockwise.halvings == 0 or self.blockwise.distill_steps <= self.model_a.timesteps,
               f"blockwise.distill_steps={self.blockwise.distill_steps} exceeds model_a's trained chain "
               f"({self.model_a.timesteps} timesteps)")
        _check(self.madformer is None or self.geometry.block_size % self.madformer.network.patch_size == 0,
               f"madformer.network.patch_size must divide geometry.block_size={self.geometry.block_size}")
        _check(self.hyperschedule is None or all(g.num_patches % s.group == 0
                                                 for s in self.hyperschedule.network.schedules),
               f"every hyperschedule group must divide the geometry's {self.geometry.num_patches} patches")
        sub = self.hyperschedule and self.hyperschedule.network.sub_patch
        _check(not sub or (sub > 0 and g.patch_size % sub == 0),
               f"hyperschedule.network.sub_patch={sub} must divide the geometry's patch_size={g.patch_size}")
        probed = self.hyperschedule and next((s for s in self.hyperschedule.network.schedules
                                              if s.name == self.hyperschedule.probe_schedule), None)
        _check(not probed or self.hyperschedule.probe_rows < (g.num_patches // probed.group - 1) * probed.delay
               + probed.tau, f"hyperschedule.probe_rows={self.hyperschedule and self.hyperschedule.probe_rows} must "
               "leave rows of its schedule to finish")
        _check(max(self.ar_corrector.depths, default=0) <= self.corrector.num_timesteps,
               f"ar_corrector.depths {self.ar_corrector.depths} exceed corrector.num_timesteps="
               f"{self.corrector.num_timesteps}")


_TINY_UNET = UNetConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(16,),
                        dropout=0.0, num_groups=4)
_QUICK_UNET = UNetConfig(base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,),
                         dropout=0.0, num_groups=8)

PRESETS: dict[str, Preset] = {
    # Every number of the brief; MADFormer (not in the brief) at the design's paper-like size (FAMILIES.md).
    "paper": Preset(name="paper", model_a=ModelAConfig(snapshots=5), model_b=ModelBConfig(snapshots=5),
                    corrector=CorrectorConfig(snapshots=5),
                    madformer=MADFormerOptions(network=MADNetworkConfig(snapshots=5), probe_steps=10),
                    hyperschedule=HyperscheduleOptions(network=HSNetworkConfig(snapshots=5, sub_patch=4),
                                                       probe_schedule="blocks", probe_rows=50)),
    # Whole pipeline on a 2-core CPU in about a quarter of an hour.
    "quick": Preset(
        name="quick",
        data=DataConfig(max_images=375, holdout=100),  # epochs below are sized for 375 images
        model_a=ModelAConfig(unet=_QUICK_UNET, steps_per_block=20,
                             train=TrainConfig(epochs=8, batch_size=32, lr=1e-3, ckpt_every=40, log_every=20),
                             snapshots=3),
        model_b=ModelBConfig(decoder=DecoderConfig(num_layers=4, width=128, num_heads=4),
                             train=TrainConfig(epochs=40, batch_size=32, lr=1e-3, ckpt_every=500, log_every=50),
                             snapshots=3),
        corrector=CorrectorConfig(unet=dataclasses.replace(_QUICK_UNET, base_channels=16, channel_mults=(1, 2),
                                                           attn_resolutions=()),
                                  train=TrainConfig(epochs=25, batch_size=32, lr=1e-3, ckpt_every=100, log_every=20),
                                  snapshots=3),
        seeds=SeedsConfig(num_seeds=100, batch_size=50),
        # Rank rule at the brief's 67.2 % A_needed, flagged in the report's first lines: on the development
        # CIFAR-10 copy the calibrated absolute rule calls B clearly worse for 0 of 100 seeds of these weak
        # models (B's images score like real ones, A's lower), which leaves the router nothing to learn.
        labeler=LabelerConfig(a_needed_share=0.672, classifier_widths=(16, 32, 64), images_per_class=1000,
                              train=TrainConfig(epochs=24, batch_size=64, lr=2e-3, ckpt_every=200, log_every=50),
                              negatives_per_cell=40),
        router=RouterConfig(n_estimators=200, n_splits=10, cv_folds=5),
        cost=CostConfig(num_images=24, batch_size=8, repeats=2),
        blockwise=BlockwiseOptions(budgets=(20, 10, 5), probe_budget=5, probe_steps=1, distill_steps=16, halvings=3),
        ar_corrector=ARCorrectorOptions(depths=(0, 10, 30, 60)),
        curves=CurvesConfig(num_seeds=50),
        distill=DistillConfig(train=TrainConfig(epochs=6, batch_size=32, lr=1e-4, ckpt_every=50, log_every=20)),
        madformer=MADFormerOptions(
            network=MADNetworkConfig(model=MADFormerConfig(num_layers=6, diffusion_layers=3, width=128, num_heads=4),
                                     patch_size=4, num_timesteps=100,
                                     train=TrainConfig(epochs=20, batch_size=32, lr=1e-3, ckpt_every=100, log_every=20),
                                     snapshots=3),
            steps=(20, 10, 5, 0), probe_steps=5),
        hyperschedule=HyperscheduleOptions(network=HSNetworkConfig(
            model=TokenTransformerConfig(num_layers=4, width=128, num_heads=4), num_timesteps=100,
            schedules=(HSSchedule("flat", 16, 0, 20), HSSchedule("blocks", 4, 5, 5, "blocks"),
                       HSSchedule("AR", 1, 1, 1, temperature=0.25), HSSchedule("slide", 1, 2, 10),
                       # blocks with one more step per block: plain, the FLOPs of "blocks" with ACS (k 1)
                       HSSchedule("blocks6", 4, 6, 6, "blocks")),
            context_level=5, train=TrainConfig(epochs=200, batch_size=32, lr=1e-3, ckpt_every=500, log_every=100),
            snapshots=3), probe_schedule="blocks", probe_rows=5, acs_level=2),
    ),
    # Tiny: the whole pipeline in seconds, for tests.
    "test": Preset(
        name="test",
        data=DataConfig(max_images=64, holdout=16),
        model_a=ModelAConfig(unet=_TINY_UNET, steps_per_block=4,
                             train=TrainConfig(epochs=2, batch_size=16, ckpt_every=4, log_every=2), snapshots=2),
        model_b=ModelBConfig(decoder=DecoderConfig(num_layers=2, width=32, num_heads=2),
                             train=TrainConfig(epochs=2, batch_size=16, ckpt_every=4, log_every=2), snapshots=2),
        corrector=CorrectorConfig(unet=_TINY_UNET, num_timesteps=10, start_step=3,
                                  train=TrainConfig(epochs=2, batch_size=16, ckpt_every=4, log_every=2), snapshots=2),
        seeds=SeedsConfig(num_seeds=40, batch_size=20),
        # Rank rule on purpose: the tiny untrained test models make images no real image resembles, so
        # the calibrated absolute rule could give one class only, and the router stages need both.
        labeler=LabelerConfig(k=2, a_needed_share=0.5, classifier_widths=(4, 8), embed_dim=8, images_per_class=24,
                              other_holdout=8, train=TrainConfig(epochs=1, batch_size=16, ckpt_every=100, log_every=5),
                              negatives_per_cell=6, trees=20, tree_depth=2, calibration_folds=2),
        router=RouterConfig(n_estimators=10, max_depth=2, n_splits=3, cv_folds=3,  # ~300 tiny fits: 2 s, less
                            sweep=(0.4, 0.55, 0.7), n_jobs=1, continuations=2),  # than starting workers
        cost=CostConfig(num_images=8, batch_size=4, repeats=1, bootstrap=200),
        # distillation off: the pipeline tests not about it skip it; tests/test_pipeline.py's distillation test
        # switches one round of each family on in a copy (--set ar_corrector.halvings=1 blockwise.halvings=1)
        blockwise=BlockwiseOptions(budgets=(4, 2), probe_budget=4, probe_steps=1, distill_steps=4, halvings=0),
        ar_corrector=ARCorrectorOptions(depths=(0, 3), halvings=0),
        curves=CurvesConfig(num_seeds=8, resamples=50),
        judge=JudgeConfig(widths=(4, 8), norm_groups=2, embed_dim=8,
                          train=TrainConfig(epochs=1, batch_size=16, ckpt_every=100, log_every=5, seed=1)),
        distill=DistillConfig(train=TrainConfig(epochs=1, batch_size=16, lr=1e-4, ckpt_every=100, log_every=2)),
    ),
}
_PAPER = PRESETS["paper"]
_ONE_EPOCH = dict(epochs=1, batch_size=32, ckpt_every=1000, log_every=1)
# Every network of the brief at full size (35.75 M-parameter U-Net, 200 steps per block, 6 x 512 decoder,
# 64-channel corrector, 2000-tree router) on few images, one epoch, few seeds: every stage at paper
# shapes, end to end on a 2-core CPU (BENCHMARKS.md). The one-epoch models are too weak for the
# calibrated label rule to give both classes, hence the rank rule, which the report flags.
PRESETS["paper-shapes"] = dataclasses.replace(
    _PAPER, name="paper-shapes",
    data=DataConfig(max_images=64, holdout=16),
    model_a=dataclasses.replace(_PAPER.model_a, train=dataclasses.replace(_PAPER.model_a.train, **_ONE_EPOCH)),
    model_b=dataclasses.replace(_PAPER.model_b, train=dataclasses.replace(_PAPER.model_b.train, **_ONE_EPOCH)),
    corrector=dataclasses.replace(_PAPER.corrector, train=dataclasses.replace(_PAPER.corrector.train, **_ONE_EPOCH)),
    seeds=SeedsConfig(num_seeds=8, batch_size=4),  # each seed costs 800 passes of A, about 30 s on the CPU
    labeler=dataclasses.replace(_PAPER.labeler, k=2, a_needed_share=0.5, images_per_class=64, other_holdout=16,
                                train=dataclasses.replace(_PAPER.labeler.train, **_ONE_EPOCH), negatives_per_cell=8,
                                trees=50),
    router=dataclasses.replace(_PAPER.router, n_splits=2, cv_folds=2, ablation_folds=2),
    cost=CostConfig(num_images=1, batch_size=1, repeats=1, bootstrap=200),  # every timed image of A is ~50 s
    blockwise=BlockwiseOptions(budgets=(200, 10), halvings=1),
    ar_corrector=ARCorrectorOptions(depths=(0, 30), halvings=1),
    curves=CurvesConfig(num_seeds=8, resamples=50),
    distill=DistillConfig(train=dataclasses.replace(_PAPER.distill.train, **_ONE_EPOCH)),
    madformer=dataclasses.replace(_PAPER.madformer, steps=(50, 0), network=dataclasses.replace(
        _PAPER.madformer.network, train=dataclasses.replace(_PAPER.madformer.network.train, **_ONE_EPOCH))),
    hyperschedule=dataclasses.replace(_PAPER.hyperschedule, acs_k=(0,), network=dataclasses.replace(
        _PAPER.hyperschedule.network, train=dataclasses.replace(_PAPER.hyperschedule.network.train, **_ONE_EPOCH))),
)

# The premise at CPU scale (README "Measured"): the quick models with the training recipe (warmup, cosine decay,
# power-function EMA, flips) on every network; A trained until its learning curve flattens (6x quick's steps), B and
# the corrector 2x quick's: A keeps the larger share of the training compute, as in the paper preset (measured: at
# 1x B is worse on 96 % of seeds, at 4x B is the better model; at 2x A is the better one by FD in two of three spaces
# and by median quality, with A_needed 32 % under the calibrated label rule). The calibrated (absolute) label rule,
# not quick's forced rank rule: at this split it gives both labels on its own.
_QUICK = PRESETS["quick"]
_RECIPE = dict(decay="cosine", ema_power=7.0, hflip=True)  # EMA power 7: relative width ~0.10 (EDM2)
PRESETS["cpu"] = dataclasses.replace(
    _QUICK, name="cpu",
    model_a=dataclasses.replace(_QUICK.model_a, train=dataclasses.replace(
        _QUICK.model_a.train, epochs=48, warmup_steps=40, ckpt_every=100, **_RECIPE), snapshots=4),
    model_b=dataclasses.replace(_QUICK.model_b, train=dataclasses.replace(
        _QUICK.model_b.train, epochs=80, warmup_steps=40, **_RECIPE), snapshots=4),
    corrector=dataclasses.replace(_QUICK.corrector, train=dataclasses.replace(
        _QUICK.corrector.train, epochs=50, warmup_steps=40, ckpt_every=200, **_RECIPE), snapshots=4),
    seeds=SeedsConfig(num_seeds=160, batch_size=40),
    labeler=dataclasses.replace(_QUICK.labeler, a_needed_share=0.0),
    curves=CurvesConfig(num_seeds=80),
    distill=dataclasses.replace(_QUICK.distill, train=dataclasses.replace(_QUICK.distill.train, epochs=20)),
    madformer=dataclasses.replace(_QUICK.madformer, network=dataclasses.replace(
        _QUICK.madformer.network, train=dataclasses.replace(_QUICK.madformer.network.train, warmup_steps=40,
                                                            **_RECIPE))),
)

# One line per preset, for `--help` (tests/test_cli.py checks that every preset has one).
PRESET_DESCRIPTIONS: dict[str, str] = {
    "paper": "every number of the brief (GPU scale)",
    "quick": "the whole pipeline on a 2-core CPU in about a quarter of an hour",
    "test": "tiny: the whole pipeline in seconds, for tests",
    "cpu": "the premise at CPU scale: quick's models with the training recipe, A trained 6x longer, B 2x",
    "paper-shapes": "every paper network at full size on few images, epochs and seeds (CPU check of paper shapes)",
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def section_type(tp) -> type | None:
    """The config dataclass an annotation names (itself, or inside `X | None`), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), None)
    return None


def _coerce(tp, text: str):
    """Parse `text` as a value of the annotated type `tp`."""
    if tp is Any:
        raise ConfigError("this field holds values made in code (a preset's `families`), not text")
    origin = typing.get_origin(tp)
    if origin is tuple:
        (elem, *_), = [typing.get_args(tp)]
        if dataclasses.is_dataclass(elem):
            raise ConfigError(f"this field holds {elem.__name__} sections, which a preset sets, not text")
        parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
        return tuple(_coerce(elem, p.strip()) for p in parts)
    if origin in (typing.Union, types.UnionType):
        return _coerce(next(a for a in typing.get_args(tp) if a is not type(None)), text)
    if tp is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"expected a boolean, got {text!r}")
    return tp(text)


def override(cfg, dotted: str, text: str):
    """Return `cfg` with the field at `dotted` (e.g. "model_a.unet.base_channels") set from `text`."""
    return set_fields(cfg, {dotted: text})


def set_fields(cfg, values: dict[str, str], _path: str = ""):
    """Return `cfg` with each dotted field of `values` set from its text. Every config is rebuilt (so checked)
    once, with all its new values: fields that must agree (geometry.image_size and geometry.block_size, or
    the geometry and router.prefix_steps) change together, in any order."""
    hints = typing.get_type_hints(type(cfg))
    groups: dict[str, dict[str, str]] = {}
    for dotted, text in values.items():
        head, _, rest = dotted.partition(".")
        if head not in hints:
            raise ConfigError(f"{_path}{dotted}: {type(cfg).__name__} has no field {head!r}; fields: {sorted(hints)}")
        groups.setdefault(head, {})[rest] = text
    new = {}
    for head, sub in groups.items():
        if "" not in sub:
            section = getattr(cfg, head)
            if section is None:
                raise ConfigError(f"{_path}{head} is off in this config (None): a preset switches it on with a value; "
                                  f"there are no {_path}{head}.* fields to set")
            new[head] = set_fields(section, sub, f"{_path}{head}.")
            continue
        try:
            new[head] = _coerce(hints[head], sub[""])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"cannot set {_path}{head}={sub['']!r}: {e}") from None
    return dataclasses.replace(cfg, **new)


def apply_overrides(cfg, assignments: list[str]):
    """Apply `key=value` strings (a key given twice: its last value), checked once with all of them set."""
    values = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like key=value")
        values[key.strip()] = text.strip()
    return set_fields(cfg, values)


def to_dict(cfg) -> dict:
    """The config's data as nested dicts (JSON-ready): the code a value holds (a family's functions) is left out."""
    return dataclasses.asdict(cfg, dict_factory=lambda items: {k: v for k, v in items if not callable(v)})


def to_json(cfg) -> str:
    return json.dumps(to_dict(cfg), sort_keys=True, indent=1)


def diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted names of fields that differ between two config dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff(va, vb, f"{prefix}{k}.")
        elif (list(va) if isinstance(va, (list, tuple)) else va) != (list(vb) if isinstance(vb, (list, tuple)) else vb):
            out.append(f"{prefix}{k}: {va!r} != {vb!r}")
    return out
