"""(a) One U-Net pass: ours (Flax, jit) vs diffusers' `UNet2DModel` of the same architecture (torch CPU).

The diffusers model is configured from our `UNetConfig`: Model A's input (3 noisy + 5
conditioning channels = 8), block_out_channels = base x mults, layers_per_block =
num_res_blocks, single-head attention (attention_head_dim = the level's channels) at the
levels whose resolution is in attn_resolutions (AttnDownBlock2D / AttnUpBlock2D there), the
same GroupNorm groups, attention in the mid block, conv down/upsampling (nearest + conv).
That is the DDPM-CIFAR layout on both sides; the parameter counts are printed and checked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import Table, gflop, ms, num_cores, time_many, xla_flops
from hybrid_jax import model_a
from hybrid_jax.config import UNetConfig, get_preset

IMAGE = 32
IN_CHANNELS = 3 + model_a.COND_CHANNELS  # Model A's U-Net input: noisy block + conditioning
PARAM_TOLERANCE = 0.05


def count_params(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def diffusers_kwargs(cfg: UNetConfig, in_channels: int = IN_CHANNELS, image: int = IMAGE) -> dict:
    """`UNet2DModel(**kwargs)` with our U-Net's architecture."""
    res = [image >> level for level in range(len(cfg.channel_mults))]
    attn = [r in cfg.attn_resolutions for r in res]
    return dict(
        sample_size=image, in_channels=in_channels, out_channels=3,
        block_out_channels=tuple(cfg.base_channels * m for m in cfg.channel_mults),
        layers_per_block=cfg.num_res_blocks, norm_num_groups=cfg.num_groups,
        attention_head_dim=None,  # None = one head of the level's width, as DDPM
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        mid_block_type="UNetMidBlock2D", add_attention=True, dropout=0.0,
        time_embedding_type="positional", downsample_type="conv", upsample_type="conv",
    )


def make_diffusers_unet(cfg: UNetConfig):
    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(**diffusers_kwargs(cfg)).eval()


def torch_flops(model, x, t) -> float:
    """FLOPs of one forward pass counted by torch's FlopCounterMode (matmuls and convs only)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x, t)
    return float(counter.get_total_flops())


def run(presets: list[str], repeats: int, batches=(1, 16)) -> list[Table]:
    import diffusers  # noqa: F401  (fail early with a clear ImportError: pip install -e '.[bench]')
    import torch

    torch.set_num_threads(num_cores())
    table = Table("U-Net pass: ours (JAX jit) vs diffusers UNet2DModel (torch CPU), Model A's U-Net (8 input channels)",
                  ["preset", "params ours", "params diffusers", "batch", "ours ms", "diffusers ms",
                   "ratio ours/diffusers", "<= 1.0", "ours compile s", "GFLOP/img XLA", "GFLOP/img torch"])
    table.notes += [f"torch threads = {torch.get_num_threads()} = cores JAX's CPU client uses ({num_cores()}); "
                    "torch.inference_mode(), model.eval(), NCHW float32 (diffusers' default layout); "
                    "ours NHWC float32, jit compiled once ahead of time.",
                    "Target: ratio <= 1.0. Median of the repeats, contenders timed in alternation."]
    for name in presets:
        cfg = get_preset(name).model_a
        params = model_a.init_params(cfg, jax.random.key(0))
        unet = model_a.make_unet(cfg)
        theirs = make_diffusers_unet(cfg.unet)
        n_ours, n_theirs = count_params(params), sum(p.numel() for p in theirs.parameters())
        if abs(n_ours / n_theirs - 1) > PARAM_TOLERANCE:
            raise AssertionError(f"{name}: parameter counts differ by more than 5 %: {n_ours} vs {n_theirs}")
        apply = jax.jit(lambda p, x, t, c: unet.apply({"params": p}, x, t, c))
        for b in batches:
            rng = np.random.default_rng(b)
            x = jnp.asarray(rng.standard_normal((b, IMAGE, IMAGE, 3)), jnp.float32)
            cond = jnp.asarray(rng.standard_normal((b, IMAGE, IMAGE, model_a.COND_CHANNELS)), jnp.float32)
            t = jnp.full((b,), 10, jnp.int32)
            tx = torch.from_numpy(np.concatenate([np.asarray(x), np.asarray(cond)], -1).transpose(0, 3, 1, 2).copy())
            tt = torch.full((b,), 10, dtype=torch.long)

            def torch_pass(xx=tx, tt=tt):
                with torch.inference_mode():
                    return theirs(xx, tt).sample

            res = time_many({"ours": (apply, (params, x, t, cond)), "diffusers": (torch_pass, ())}, repeats=repeats)
            ours, dif = res["ours"], res["diffusers"]
            table.add(name, f"{n_ours:,}", f"{n_theirs:,}", b, ms(ours.median_s), ms(dif.median_s),
                      ours.median_s / dif.median_s, "yes" if ours.median_s <= dif.median_s else "NO", ours.compile_s, gflop(xla_flops(ours.compiled)) / b,
                      gflop(torch_flops(theirs, tx, tt)) / b)
            print(table.to_text().splitlines()[-1 - len(table.notes)], flush=True)
    return [table]
