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
import jax.extend
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import Table, gflop, ms, num_cores, time_many, xla_flops
from hybrid_jax import xla
from hybrid_jax.config import UNetConfig, get_preset
from hybrid_jax.generators import model_a

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
                   "ratio ours/diffusers", "<= 1.0", "ours, XLA defaults ms", "defaults / ours", "ours compile s",
                   "GFLOP/img XLA", "GFLOP/img torch"])
    table.notes += [f"torch threads = {torch.get_num_threads()} = cores JAX's CPU client uses ({num_cores()}); "
                    "torch.inference_mode(), model.eval(), NCHW float32 (diffusers' default layout); "
                    "ours NHWC float32, jit compiled once ahead of time.",
                    "'ours' is jitted as the library's samplers are (`hybrid_jax.xla.jit`: on CPU, XLA's YNNPACK "
                    f"fusions off, options {xla.compiler_options() or 'none'}); 'ours, XLA defaults' is a plain "
                    "`jax.jit` of the same function.",
                    "Target: ratio <= 1.0. Median of the repeats, contenders timed in alternation."]
    for name in presets:
        cfg = get_preset(name).model_a
        params = model_a.init_params(cfg, jax.random.key(0))
        unet = model_a.make_unet(cfg)
        theirs = make_diffusers_unet(cfg.unet)
        n_ours, n_theirs = count_params(params), sum(p.numel() for p in theirs.parameters())
        if abs(n_ours / n_theirs - 1) > PARAM_TOLERANCE:
            raise AssertionError(f"{name}: parameter counts differ by more than 5 %: {n_ours} vs {n_theirs}")
        fn = lambda p, x, t, c: unet.apply({"params": p}, x, t, c)  # noqa: E731
        apply, apply_defaults = xla.jit(fn), jax.jit(fn)
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

            res = time_many({"ours": (apply, (params, x, t, cond)), "defaults": (apply_defaults, (params, x, t, cond)),
                             "diffusers": (torch_pass, ())}, repeats=repeats)
            ours, dif, dflt = res["ours"], res["diffusers"], res["defaults"]
            table.add(name, f"{n_ours:,}", f"{n_theirs:,}", b, ms(ours.median_s), ms(dif.median_s),
                      ours.median_s / dif.median_s, "yes" if ours.median_s <= dif.median_s else "NO",
                      ms(dflt.median_s), dflt.median_s / ours.median_s, ours.compile_s, gflop(xla_flops(ours.compiled)) / b,
                      gflop(torch_flops(theirs, tx, tt)) / b)
            print(table.row_text(), flush=True)
    return [table, conv_breakdown(presets, repeats)]


def _conv_eqns(jaxpr) -> list:
    """Every conv_general_dilated in a jaxpr, sub-jaxprs (pjit, custom_jvp, ...) included."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive is jax.lax.conv_general_dilated_p:
            out.append(eqn)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            out += _conv_eqns(sub)
    return out


def conv_breakdown(presets: list[str], repeats: int, batch: int = 16) -> Table:
    """Time of all convolutions of one U-Net pass, each conv shape timed alone: ours (the exact
    XLA op of the pass) vs torch's Conv2d, and their sum over the pass."""
    import torch

    table = Table(f"Where a U-Net pass spends its time: convolutions, ours (XLA) vs torch (oneDNN), batch {batch}",
                  ["preset", "conv shape (in -> out, kernel, stride)", "count", "ours ms (one)", "torch ms (one)",
                   "ours / torch", "ours GFLOP/s", "torch GFLOP/s"])
    table.notes.append("Each distinct convolution of the pass timed alone, side by side (ours: the same XLA op, "
                       "jitted with `hybrid_jax.xla.jit`; torch: `nn.Conv2d`, NCHW as in diffusers) and "
                       "multiplied by how often the pass runs it; the 'all convolutions' row sums them.")
    for name in presets:
        cfg = get_preset(name).model_a
        params = model_a.init_params(cfg, jax.random.key(0))
        unet = model_a.make_unet(cfg)
        x = jnp.zeros((batch, IMAGE, IMAGE, 3))
        cond = jnp.zeros((batch, IMAGE, IMAGE, model_a.COND_CHANNELS))
        jaxpr = jax.make_jaxpr(lambda p: unet.apply({"params": p}, x, jnp.zeros((batch,), jnp.int32), cond))(params)
        shapes: dict[tuple, list] = {}
        for eqn in _conv_eqns(jaxpr.jaxpr):
            key = (tuple(eqn.invars[0].aval.shape), tuple(eqn.invars[1].aval.shape), tuple(eqn.params["window_strides"]))
            shapes.setdefault(key, []).append(eqn)
        rows = []
        for (lhs, rhs, strides), eqns in shapes.items():
            rng = np.random.default_rng(0)
            xx = jnp.asarray(rng.standard_normal(lhs), jnp.float32)
            ww = jnp.asarray(rng.standard_normal(rhs), jnp.float32)
            params_ = dict(eqns[0].params)
            ours = xla.jit(lambda a, b, p=params_: jax.lax.conv_general_dilated_p.bind(a, b, **p))
            kh, _, cin, cout = rhs
            conv = torch.nn.Conv2d(cin, cout, kh, stride=strides[0], padding=kh // 2, bias=False).eval()
            tx = torch.from_numpy(np.asarray(xx).transpose(0, 3, 1, 2).copy())

            def theirs(conv=conv, tx=tx):
                with torch.inference_mode():
                    return conv(tx)

            res = time_many({"ours": (ours, (xx, ww)), "torch": (theirs, ())}, repeats=repeats)
            out_hw = lhs[1] // strides[0]
            gf = 2 * batch * out_hw * out_hw * cin * cout * kh * kh / 1e9
            o, t = res["ours"].median_s, res["torch"].median_s
            rows.append((len(eqns) * o, len(eqns) * t, [name, f"{lhs[1]}x{lhs[2]}x{cin} -> {cout}, {kh}x{kh}, /{strides[0]}",
                                                        len(eqns), ms(o), ms(t), o / t, gf / o, gf / t]))
        for row in sorted(rows, key=lambda r: -r[0]):  # largest share of the pass first
            table.add(*row[2])
        ours, theirs = sum(r[0] for r in rows), sum(r[1] for r in rows)
        table.add(name, "all convolutions of one pass", sum(len(e) for e in shapes.values()), ms(ours), ms(theirs),
                  ours / theirs, "", "")
        print(table.row_text(), flush=True)
    return table
