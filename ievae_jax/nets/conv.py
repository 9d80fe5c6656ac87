"""A small convolutional version for 28x28 images: two stride-2 5x5 convolutions
(32, 64 channels) down to 7x7 feed the classifier's dense layers and, as the image
features of `layers.EquivariantEncoder`, the encoder's; the decoder mirrors them with
two transposed convolutions.
"""

from typing import Tuple

import flax.linen as nn
import jax.numpy as jnp

from ievae_jax.nets.layers import ConcatDense, apply_to_images


class ConvTrunk(nn.Module):
  """(N, 28, 28, C) -> (N, 7 * 7 * 64) features."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    h = nn.relu(nn.Conv(32, (5, 5), strides=2)(x))
    h = nn.relu(nn.Conv(64, (5, 5), strides=2)(h))
    return h.reshape(h.shape[0], -1)


class Classifier(nn.Module):
  """c(x): logits of q(y | x). (..., 28, 28, C) -> (..., K).

  dropout_rate drops the convolutional features and the dense hidden units when
  `deterministic` is False (needs a "dropout" rng).
  """
  hidden: int
  num_classes: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
    drop = lambda h: nn.Dropout(self.dropout_rate, deterministic=deterministic)(h)
    h = drop(apply_to_images(ConvTrunk(), x))
    h = drop(nn.relu(nn.Dense(self.hidden)(h)))
    return nn.Dense(self.num_classes)(h)


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
