"""Input augmentation, an extension beyond the paper (off by default).

Random translation and random horizontal shear (slant) are the kind of
within-class transformation the equivariant latent z is meant to absorb: the class
of a shifted or slanted digit is the class of the digit, so q(y | x) should not
move, while p(x | y, z) must now model position and slant.
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


def shear(images: jnp.ndarray, amounts: jnp.ndarray) -> jnp.ndarray:
  """Shears each image horizontally by its own amount: row i moves right by
  amount * (c - i) pixels, c = (H - 1) / 2 the middle row, so a positive amount makes
  the top lean right (the sign of `evaluation.ink_slant`). Linear interpolation
  along each row; pixels from outside the image are zero.

  images: float (B, H, W, C); amounts: (B,). Returns (B, H, W, C).
  """
  _, height, width, _ = images.shape
  rows = jnp.arange(height, dtype=jnp.float32)[:, None]
  cols = jnp.arange(width, dtype=jnp.float32)[None, :]

  def one(image, amount):
    source = cols - amount * ((height - 1) / 2 - rows)            # (H, W): where each pixel reads
    left = jnp.floor(source)
    frac = (source - left)[..., None]
    left = left.astype(jnp.int32)
    padded = jnp.pad(image, ((0, 0), (1, 1), (0, 0)))             # zero columns at -1 and W

    def read(col):                                                # (H, W) -> (H, W, C)
      col = jnp.clip(col, -1, width) + 1
      return jnp.take_along_axis(padded, col[..., None], axis=1)
    return (1 - frac) * read(left) + frac * read(left + 1)

  return jax.vmap(one)(images, amounts)


def random_shear(key: jax.Array, images: jnp.ndarray, max_shear: float) -> jnp.ndarray:
  """`shear` by an amount drawn uniformly from [-max_shear, max_shear] per image.

  max_shear = 0 returns the images unchanged. images float (B, H, W, C) -> same shape.
  """
  if max_shear == 0:
    return images
  amounts = jax.random.uniform(key, images.shape[:1], minval=-max_shear, maxval=max_shear)
  return shear(images, amounts)
