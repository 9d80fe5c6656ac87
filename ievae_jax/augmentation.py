"""Input augmentation, an extension beyond the paper (off by default).

Random translation is the kind of within-class transformation the equivariant
latent z is meant to absorb: the class of a shifted digit is the class of the
digit, so q(y | x) should not move, while p(x | y, z) must now model position.
"""

import jax
import jax.numpy as jnp


def random_shift(key: jax.Array, images: jnp.ndarray, max_shift: int) -> jnp.ndarray:
  """Translates each image by its own integer offset in [-max_shift, max_shift]^2.

  Pixels shifted in are zero (the MNIST background). images (B, H, W, C) -> same shape.
  max_shift = 0 returns the images unchanged.
  """
  if max_shift == 0:
    return images
  batch, height, width, channels = images.shape
  padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
  offsets = jax.random.randint(key, (batch, 2), 0, 2 * max_shift + 1)

  def crop(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

  return jax.vmap(crop)(padded, offsets)
