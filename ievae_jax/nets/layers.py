"""Layers shared by the MLP and the convolutional networks."""

from typing import Callable, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from ievae_jax.nets.products import Dense


class ConcatDense(nn.Module):
  """A dense layer on the concatenation [a, b], computed as W_a a + W_b b + bias.

  Splitting the product lets `a` and `b` carry different leading dimensions that
  broadcast: with `a` of shape (B, 1, D) and `b` of shape (K, d), W_a a costs B
  products and W_b b costs K, instead of B * K products on the concatenation. This
  is how the class part of the IE-VAE's encoder and decoder is paid once per class.

  Shapes: a (..., D_a), b (..., D_b) or None -> (..., features), leading dims broadcast.
  """
  features: int
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, a: jnp.ndarray, b: Optional[jnp.ndarray]) -> jnp.ndarray:
    h = Dense(self.features, self.matmul_dtype, use_bias=False, name="from_first")(a)
    if b is not None:
      h = h + Dense(self.features, self.matmul_dtype, use_bias=False, name="from_second")(b)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    return h + bias


class GaussianHead(nn.Module):
  """Mean and standard deviation of a diagonal Normal: (..., H) -> 2 x (..., z_dim).

  The scale is softplus(.) + 1e-4: positive, smooth, and never so small that the
  KL term's log sigma blows up.
  """
  z_dim: int
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, h: jnp.ndarray):
    out = Dense(2 * self.z_dim, self.matmul_dtype, name="mean_and_scale")(h)
    mean, raw_scale = jnp.split(out, 2, axis=-1)
    return mean, nn.softplus(raw_scale) + 1e-4


class InvariantEmbedding(nn.Module):
  """g(y): the invariant representation of a class, an MLP on its one-hot code.

  Shapes: (..., K) one-hot (or any weights over classes) -> (..., r_dim).
  """
  hidden: int
  r_dim: int
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, y_onehot: jnp.ndarray) -> jnp.ndarray:
    h = nn.relu(Dense(self.hidden, self.matmul_dtype)(y_onehot))
    return Dense(self.r_dim, self.matmul_dtype)(h)


class OneHotEmbedding(nn.Module):
  """M2's "representation" of a class: the one-hot code itself. (..., K) -> (..., K)."""

  @nn.compact
  def __call__(self, y_onehot: jnp.ndarray) -> jnp.ndarray:
    return y_onehot


def apply_to_images(fn: Callable, x: jnp.ndarray) -> jnp.ndarray:
  """Applies fn, defined on (N, H, W, C) batches, to images with any leading dims."""
  lead = x.shape[:-3]
  out = fn(x.reshape((-1,) + x.shape[-3:]))
  return out.reshape(lead + out.shape[1:])


class EquivariantEncoder(nn.Module):
  """q(z | x, r) (r=None: the strict q(z | x)): image features, then [features, r]
  through two dense layers to a Gaussian head.

  `features` maps (N, H, W, C) images to (N, F) and runs once per image, however
  many class hypotheses r carries; r joins at the first dense layer.
  Shapes: x (..., H, W, C), r (..., r_dim) or None, leading dims broadcast ->
  mean and scale, each (..., z_dim).
  """
  hidden: int
  z_dim: int
  features: Callable
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jnp.ndarray, r: Optional[jnp.ndarray]) -> Tuple[jnp.ndarray, jnp.ndarray]:
    h = nn.relu(ConcatDense(self.hidden, self.matmul_dtype, name="encoder_input")(
        apply_to_images(self.features, x), r))
    h = nn.relu(Dense(self.hidden, self.matmul_dtype)(h))
    return GaussianHead(self.z_dim, self.matmul_dtype)(h)
