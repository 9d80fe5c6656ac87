"""MLP networks, 784-500-500 as in Kingma et al. 2014 (ReLU units)."""

import math
from typing import Tuple

import flax.linen as nn
import jax.numpy as jnp

from ievae_jax.nets.layers import ConcatDense


def flatten_image(x: jnp.ndarray) -> jnp.ndarray:
  """(..., H, W, C) -> (..., H * W * C): the MLP encoder's image features."""
  return x.reshape(x.shape[:-3] + (-1,))


class Classifier(nn.Module):
  """c(x): logits of q(y | x), the invariant encoder. (..., H, W, C) -> (..., K).

  dropout_rate drops the hidden units when `deterministic` is False (needs a
  "dropout" rng).
  """
  hidden: int
  num_classes: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
    drop = lambda h: nn.Dropout(self.dropout_rate, deterministic=deterministic)(h)
    h = drop(nn.relu(nn.Dense(self.hidden)(flatten_image(x))))
    h = drop(nn.relu(nn.Dense(self.hidden)(h)))
    return nn.Dense(self.num_classes)(h)


class Decoder(nn.Module):
  """f([r, z]): Bernoulli logits of p(x | r, z). r (..., r_dim), z (..., z_dim) -> (..., H, W, C)."""
  hidden: int
  image_shape: Tuple[int, int, int]

  @nn.compact
  def __call__(self, r: jnp.ndarray, z: jnp.ndarray) -> jnp.ndarray:
    h = nn.relu(ConcatDense(self.hidden, name="decoder_input")(z, r))
    h = nn.relu(nn.Dense(self.hidden)(h))
    logits = nn.Dense(math.prod(self.image_shape))(h)
    return logits.reshape(logits.shape[:-1] + tuple(self.image_shape))
