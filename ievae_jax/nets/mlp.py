"""MLP networks, 784-500-500 as in Kingma et al. 2014 (ReLU units)."""

import math
from typing import Tuple

import flax.linen as nn
import jax.numpy as jnp

from ievae_jax.nets.layers import ConcatDense
from ievae_jax.nets.products import Dense


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
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
    drop = lambda h: nn.Dropout(self.dropout_rate, deterministic=deterministic)(h)
    h = drop(nn.relu(Dense(self.hidden, self.matmul_dtype)(flatten_image(x))))
    h = drop(nn.relu(Dense(self.hidden, self.matmul_dtype)(h)))
    return Dense(self.num_classes, self.matmul_dtype)(h)


class Decoder(nn.Module):
  """f([r, z]): Bernoulli logits of p(x | r, z). r (..., r_dim), z (..., z_dim) -> (..., H, W, C)."""
  hidden: int
  image_shape: Tuple[int, int, int]
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, r: jnp.ndarray, z: jnp.ndarray) -> jnp.ndarray:
    h = nn.relu(ConcatDense(self.hidden, self.matmul_dtype, name="decoder_input")(z, r))
    h = nn.relu(Dense(self.hidden, self.matmul_dtype)(h))
    logits = Dense(math.prod(self.image_shape), self.matmul_dtype)(h)
    return logits.reshape(logits.shape[:-1] + tuple(self.image_shape))
