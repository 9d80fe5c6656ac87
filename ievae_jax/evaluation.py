"""Evaluation of a trained model: classification error of argmax q(y | x)."""

import jax
import jax.numpy as jnp
import numpy as np

from ievae_jax import model


@jax.jit
def _wrong(params: model.Params, images: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """(B,) bool: argmax q(y | x) != label, for uint8 images (B, H, W, C)."""
  x = images.astype(jnp.float32) / 255.0
  return jnp.argmax(model.classify(params, x), -1) != labels


def classification_error(params: model.Params, images: np.ndarray, labels: np.ndarray,
                         batch_size: int = 1000) -> float:
  """Fraction of images (N, H, W, C) uint8 whose argmax q(y | x) differs from labels (N,).

  The last partial batch is padded to `batch_size`, so one shape is compiled; the
  padding is not counted.
  """
  n = len(images)
  errors = 0
  for start in range(0, n, batch_size):
    x, y = images[start:start + batch_size], labels[start:start + batch_size]
    valid = len(x)
    if valid < batch_size:
      x = np.concatenate([x, np.zeros((batch_size - valid,) + x.shape[1:], x.dtype)])
      y = np.concatenate([y, np.zeros((batch_size - valid,), y.dtype)])
    errors += int(np.asarray(_wrong(params, x, y))[:valid].sum())
  return errors / n
