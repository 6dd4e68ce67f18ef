"""Inception-v3 pool features (the FID network) from a weights file the user provides; nothing is downloaded.

The module follows the topology of the network FID is computed with (pytorch-fid's
`FIDInceptionA/C/E`, TF's 2015-12-05 graph): average pools that do not count padding, and a max
pool in the last block's pool branch. Images are resized to `input_size` px (bilinear) and kept
in [-1, 1], as pytorch-fid feeds them; the feature is the 2048-d global average pool.

Weights file: an `.npz` whose keys are the PyTorch state-dict names of pytorch-fid's
`FIDInceptionV3` (or torchvision's `inception_v3`, same names), e.g. `Mixed_5b.branch1x1.conv.weight`
(OIHW) and `Mixed_5b.branch1x1.bn.running_mean`. Make one from the pytorch-fid weights with

    import numpy as np, torch
    sd = torch.load("pt_inception-2015-12-05-6726825d.pth", map_location="cpu")
    np.savez("inception_fid.npz", **{k: v.numpy() for k, v in sd.items()})

and set `labeler.inception_weights` to its path. Keys the network does not use (the logits layer,
AuxLogits, num_batches_tracked) are ignored; a missing or misshapen weight is an error that names it.
`width` scales every channel count (1.0: the real network); the tests run the whole path with a
network of width 1/16 on 75 px inputs, written in the same file format.
"""

from __future__ import annotations

import functools
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax import xla

_BN_EPS = 1e-3


class InceptionWeightsError(ValueError):
    """The weights file does not fit the network; the message names the key."""


class BasicConv(nn.Module):
    features: int
    kernel: tuple[int, int]
    strides: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        pad = ((self.padding[0], self.padding[0]), (self.padding[1], self.padding[1]))
        x = nn.Conv(self.features, self.kernel, (self.strides, self.strides), padding=pad, use_bias=False,
                    name="conv")(x)
        bn = self.param  # batch norm in inference form: (x - mean) / sqrt(var + eps) * scale + bias
        c = self.features
        scale, bias = bn("bn_scale", nn.initializers.ones, (c,)), bn("bn_bias", nn.initializers.zeros, (c,))
        mean, var = bn("bn_mean", nn.initializers.zeros, (c,)), bn("bn_var", nn.initializers.ones, (c,))
        return nn.relu((x - mean) * jax.lax.rsqrt(var + _BN_EPS) * scale + bias)


def _avg_pool(x):
    """3x3, stride 1, padding 1, padding not counted (count_include_pad=False)."""
    ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
    pad = ((1, 1), (1, 1))
    return nn.avg_pool(x, (3, 3), padding=pad) / nn.avg_pool(ones, (3, 3), padding=pad)


def _max_pool(x, stride=2, padding=0):
    pad = ((padding, padding), (padding, padding))
    return nn.max_pool(x, (3, 3), (stride, stride), padding=pad)


class InceptionA(nn.Module):
    pool_features: int
    w: float

    @nn.compact
    def __call__(self, x):
        c = lambda n: max(1, int(n * self.w))
        b1 = BasicConv(c(64), (1, 1), name="branch1x1")(x)
        b5 = BasicConv(c(48), (1, 1), name="branch5x5_1")(x)
        b5 = BasicConv(c(64), (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv(c(64), (1, 1), name="branch3x3dbl_1")(x)
        b3 = BasicConv(c(96), (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv(c(96), (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv(c(self.pool_features), (1, 1), name="branch_pool")(_avg_pool(x))
        return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):
    w: float

    @nn.compact
    def __call__(self, x):
        c = lambda n: max(1, int(n * self.w))
        b3 = BasicConv(c(384), (3, 3), strides=2, name="branch3x3")(x)
        bd = BasicConv(c(64), (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(c(96), (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv(c(96), (3, 3), strides=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool(x)], -1)


class InceptionC(nn.Module):
    c7: int
    w: float

    @nn.compact
    def __call__(self, x):
        c = lambda n: max(1, int(n * self.w))
        c7 = c(self.c7)
        b1 = BasicConv(c(192), (1, 1), name="branch1x1")(x)
        b7 = BasicConv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv(c(192), (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv(c(192), (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv(c(192), (1, 1), name="branch_pool")(_avg_pool(x))
        return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):
    w: float

    @nn.compact
    def __call__(self, x):
        c = lambda n: max(1, int(n * self.w))
        b3 = BasicConv(c(192), (1, 1), name="branch3x3_1")(x)
        b3 = BasicConv(c(320), (3, 3), strides=2, name="branch3x3_2")(b3)
        b7 = BasicConv(c(192), (1, 1), name="branch7x7x3_1")(x)
        b7 = BasicConv(c(192), (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(c(192), (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(c(192), (3, 3), strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool(x)], -1)


class InceptionE(nn.Module):
    w: float
    max_pool_branch: bool  # FID's last block (Mixed_7c) pools with max, the one before with average

    @nn.compact
    def __call__(self, x):
        c = lambda n: max(1, int(n * self.w))
        b1 = BasicConv(c(320), (1, 1), name="branch1x1")(x)
        b3 = BasicConv(c(384), (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([BasicConv(c(384), (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                              BasicConv(c(384), (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], -1)
        bd = BasicConv(c(448), (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(c(384), (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([BasicConv(c(384), (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                              BasicConv(c(384), (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], -1)
        pooled = _max_pool(x, 1, 1) if self.max_pool_branch else _avg_pool(x)
        bp = BasicConv(c(192), (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], -1)


class InceptionV3(nn.Module):
    """[b, H, W, 3] in [-1, 1] (H, W >= 75) -> [b, 2048 * width] pool features."""

    width: float = 1.0

    @nn.compact
    def __call__(self, x):
        w = self.width
        c = lambda n: max(1, int(n * w))
        x = BasicConv(c(32), (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(c(32), (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv(c(64), (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool(x)
        x = BasicConv(c(80), (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv(c(192), (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool(x)
        x = InceptionA(32, w, name="Mixed_5b")(x)
        x = InceptionA(64, w, name="Mixed_5c")(x)
        x = InceptionA(64, w, name="Mixed_5d")(x)
        x = InceptionB(w, name="Mixed_6a")(x)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(c7, w, name=name)(x)
        x = InceptionD(w, name="Mixed_7a")(x)
        x = InceptionE(w, False, name="Mixed_7b")(x)
        x = InceptionE(w, True, name="Mixed_7c")(x)
        return x.mean((1, 2))


_TORCH_SUFFIX = {"conv.weight": ("conv", "kernel"), "bn.weight": ("bn_scale",), "bn.bias": ("bn_bias",),
                 "bn.running_mean": ("bn_mean",), "bn.running_var": ("bn_var",)}


def _flatten(tree, prefix=()) -> dict[tuple, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _torch_name(path: tuple) -> str:
    """Flax param path -> the PyTorch state-dict name it comes from."""
    for suffix, tail in _TORCH_SUFFIX.items():
        if path[-len(tail):] == tail:
            return ".".join(path[:-len(tail)]) + "." + suffix
    raise KeyError(path)


def template(width: float, input_size: int):
    """Abstract params (shapes) of InceptionV3(width) at `input_size` px."""
    net = InceptionV3(width)
    return jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, input_size, input_size, 3))))["params"]


def to_torch_names(params) -> dict[str, np.ndarray]:
    """Flax params -> {PyTorch state-dict name: array} (OIHW kernels): the weights-file layout."""
    out = {}
    for path, v in _flatten(params).items():
        v = np.asarray(v)
        out[_torch_name(path)] = v.transpose(3, 2, 0, 1) if path[-1] == "kernel" else v
    return out


def load_params(path, width: float = 1.0, input_size: int = 299):
    """Params of InceptionV3(width) from a weights file in PyTorch names (see module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InceptionWeightsError(f"Inception weights file {path} does not exist; set labeler.inception_weights "
                                    "to the .npz made as in hybrid_jax/quality/inception.py, or to '' to go without")
    with np.load(path, allow_pickle=False) as f:
        stored = {k: f[k] for k in f.files}
    flat = {}
    for p, shape in _flatten(template(width, input_size)).items():
        name = _torch_name(p)
        if name not in stored:
            raise InceptionWeightsError(f"{path}: weight {name!r} is missing; is this the FID Inception-v3 "
                                        f"(width {width:g}) in PyTorch names?")
        v = stored[name]
        v = v.transpose(2, 3, 1, 0) if p[-1] == "kernel" and v.ndim == 4 else v
        if tuple(v.shape) != tuple(shape.shape):
            raise InceptionWeightsError(f"{path}: weight {name!r} has shape {v.shape}, the network needs "
                                        f"{tuple(shape.shape)} (HWIO for kernels) at width {width:g}")
        flat[p] = jnp.asarray(v, jnp.float32)
    tree: dict = {}
    for p, v in flat.items():
        node = tree
        for k in p[:-1]:
            node = node.setdefault(k, {})
        node[p[-1]] = v
    return tree


@functools.lru_cache(maxsize=4)
def _apply(width: float, input_size: int):
    net = InceptionV3(width)

    @xla.jit
    def f(params, x):
        x = jax.image.resize(x, (x.shape[0], input_size, input_size, 3), "bilinear")
        return net.apply({"params": params}, x)
    return f


def pool_features(params, images: np.ndarray, width: float = 1.0, input_size: int = 299,
                  batch: int = 50) -> np.ndarray:
    """[n, 32, 32, 3] in [-1, 1] -> [n, 2048 * width] pool features, in fixed-size batches."""
    f = _apply(float(width), int(input_size))
    images = np.asarray(images, np.float32)
    out = []
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch]
        padded = np.resize(chunk, (batch, *chunk.shape[1:])) if len(chunk) < batch else chunk
        out.append(np.asarray(f(params, padded), np.float64)[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, max(1, int(2048 * width))))
