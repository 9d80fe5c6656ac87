"""A small convolutional version for 28x28 images: two stride-2 5x5 convolutions
(32, 64 channels) down to 7x7 feed the classifier's dense layers and, as the image
features of `layers.EquivariantEncoder`, the encoder's; the decoder mirrors them with
two transposed convolutions, computed phase by phase (`conv_transpose_stride2`).
"""

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ievae_jax.nets.layers import ConcatDense, apply_to_images
from ievae_jax.nets.products import Dense


def _phase(kernel_size: int, phase: int):
  """For output positions 2m + phase of a stride-2 "SAME" transposed convolution: the
  first kernel tap that feeds them (every second tap from there does) and the (low,
  high) padding of the undilated input that lines those taps up with inputs m + offset."""
  pad_low = (kernel_size + 1) // 2                  # lax.conv_transpose's, for sides >= 2
  first = (pad_low - phase) % 2
  taps = len(range(first, kernel_size, 2))
  offset = (phase + first - pad_low) // 2
  return first, (-offset, offset + taps - 1)


def conv_transpose_stride2(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  """`jax.lax.conv_transpose(x, kernel, (2, 2), "SAME")`, computed as four stride-1
  convolutions, one per output phase (row and column parity), interleaved.

  The same sums, term by term; why: XLA's CPU backend computes the kernel gradient of
  the direct form, a convolution with a dilated input, on a generic slow path (78% of
  the `--arch=conv` step; README, "Speed"), while the gradients of these four are
  ordinary convolutions. x (N, H, W, C), kernel (kh, kw, C, O) -> (N, 2H, 2W, O), with
  kh, kw >= 2 (a 1-wide kernel leaves every other output phase without a tap).
  """
  if min(kernel.shape[:2]) < 2:
    raise ValueError(f"conv_transpose_stride2 needs kernel sides of at least 2; got "
                     f"{kernel.shape[:2]}. Use jax.lax.conv_transpose for 1-wide kernels.")
  rows = []
  for row_phase in (0, 1):
    row_first, row_pad = _phase(kernel.shape[0], row_phase)
    row = []
    for col_phase in (0, 1):
      col_first, col_pad = _phase(kernel.shape[1], col_phase)
      row.append(jax.lax.conv_general_dilated(
          x, kernel[row_first::2, col_first::2], (1, 1), (row_pad, col_pad),
          dimension_numbers=("NHWC", "HWIO", "NHWC")))
    rows.append(jnp.stack(row, axis=3))                  # (N, H, W, 2 col phases, O)
  y = jnp.stack(rows, axis=2)                            # (N, H, 2 row phases, W, 2, O)
  n, h, _, w, _, o = y.shape
  return y.reshape(n, 2 * h, 2 * w, o)


class ConvTranspose2x(nn.Module):
  """nn.ConvTranspose(features, kernel_size, strides=(2, 2), padding="SAME") with the
  same parameters (names, shapes, initialisers), computed by `conv_transpose_stride2`.
  (N, H, W, C) -> (N, 2H, 2W, features)."""
  features: int
  kernel_size: Tuple[int, int]

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        tuple(self.kernel_size) + (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    return conv_transpose_stride2(x, kernel) + bias


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
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
    drop = lambda h: nn.Dropout(self.dropout_rate, deterministic=deterministic)(h)
    h = drop(apply_to_images(ConvTrunk(), x))
    h = drop(nn.relu(Dense(self.hidden, self.matmul_dtype)(h)))
    return Dense(self.num_classes, self.matmul_dtype)(h)


class Decoder(nn.Module):
  """f([r, z]): Bernoulli logits. r (..., r_dim), z (..., z_dim) -> (..., 28, 28, C)."""
  hidden: int
  image_shape: Tuple[int, int, int]
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, r: jnp.ndarray, z: jnp.ndarray) -> jnp.ndarray:
    h = nn.relu(ConcatDense(self.hidden, self.matmul_dtype, name="decoder_input")(z, r))
    h = nn.relu(Dense(7 * 7 * 64, self.matmul_dtype)(h))
    lead = h.shape[:-1]
    h = h.reshape((-1, 7, 7, 64))
    # Named as nn.ConvTranspose's were, so that earlier checkpoints load unchanged.
    h = nn.relu(ConvTranspose2x(32, (5, 5), name="ConvTranspose_0")(h))
    logits = ConvTranspose2x(self.image_shape[-1], (5, 5), name="ConvTranspose_1")(h)
    return logits.reshape(lead + logits.shape[1:])
