"""A small convolutional version: two stride-2 5x5 convolutions (32, 64 channels)
down to 7x7, mirrored by two transposed convolutions in the decoder. For 28x28 images.
"""

from typing import Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from ievae_jax.nets.layers import ConcatDense, GaussianHead


def _apply_to_images(fn, x: jnp.ndarray) -> jnp.ndarray:
  """Applies fn on (N, H, W, C) batches to x with any leading dims."""
  lead = x.shape[:-3]
  out = fn(x.reshape((-1,) + x.shape[-3:]))
  return out.reshape(lead + out.shape[1:])


class ConvTrunk(nn.Module):
  """(N, 28, 28, C) -> (N, 7 * 7 * 64) features."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    h = nn.relu(nn.Conv(32, (5, 5), strides=2)(x))
    h = nn.relu(nn.Conv(64, (5, 5), strides=2)(h))
    return h.reshape(h.shape[0], -1)


class Classifier(nn.Module):
  """c(x): logits of q(y | x). (..., 28, 28, C) -> (..., K)."""
  hidden: int
  num_classes: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    h = _apply_to_images(ConvTrunk(), x)
    h = nn.relu(nn.Dense(self.hidden)(h))
    return nn.Dense(self.num_classes)(h)


class EquivariantEncoder(nn.Module):
  """q(z | x, r) (r=None: the strict q(z | x)). x (..., 28, 28, C), r (..., r_dim) -> 2 x (..., z_dim).

  The convolutions see x alone, so they run once per image whatever the number of
  class hypotheses; r joins at the first dense layer.
  """
  hidden: int
  z_dim: int

  @nn.compact
  def __call__(self, x: jnp.ndarray, r: Optional[jnp.ndarray]) -> Tuple[jnp.ndarray, jnp.ndarray]:
    features = _apply_to_images(ConvTrunk(), x)
    h = nn.relu(ConcatDense(self.hidden, name="encoder_input")(features, r))
    return GaussianHead(self.z_dim)(h)


class Decoder(nn.Module):
  """f([r, z]): Bernoulli logits. r (..., r_dim), z (..., z_dim) -> (..., 28, 28, C)."""
  hidden: int
  image_shape: Tuple[int, int, int]

  @nn.compact
  def __call__(self, r: jnp.ndarray, z: jnp.ndarray) -> jnp.ndarray:
    h = nn.relu(ConcatDense(self.hidden, name="decoder_input")(z, r))
    h = nn.relu(nn.Dense(7 * 7 * 64)(h))
    lead = h.shape[:-1]
    h = h.reshape((-1, 7, 7, 64))
    h = nn.relu(nn.ConvTranspose(32, (5, 5), strides=(2, 2))(h))
    logits = nn.ConvTranspose(self.image_shape[-1], (5, 5), strides=(2, 2))(h)
    return logits.reshape(lead + logits.shape[1:])
