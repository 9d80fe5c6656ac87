"""Input augmentation, an extension beyond the paper (off by default).

Random translation, random horizontal shear (slant) and random elastic distortion
are the kind of within-class transformation the equivariant latent z is meant to
absorb: the class of a shifted, slanted or bent digit is the class of the digit, so
q(y | x) should not move, while p(x | y, z) must now model position, slant and
stroke shape.
"""

import jax
import jax.numpy as jnp
import numpy as np

# Simard, Steinkraus & Platt (ICDAR 2003), "Best practices for convolutional neural
# networks applied to visual document analysis": the width, in pixels, of the Gaussian
# that smooths the random displacement field of an elastic distortion.
ELASTIC_SIGMA = 4.0


def translate(images: jnp.ndarray, offsets: jnp.ndarray, max_shift: int) -> jnp.ndarray:
  """Moves each image down by offsets[:, 0] and right by offsets[:, 1] pixels.

  Pixels shifted in are zero (the MNIST background). images (B, H, W, C), offsets
  (B, 2) int -> (B, H, W, C). An offset outside [-max_shift, max_shift] is clipped to
  that range: the padding is only max_shift wide, and a traced offset cannot raise.
  """
  _, height, width, channels = images.shape
  padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
  # Not left to dynamic_slice: it reads a negative start from the far end (start + size)
  # before clamping, which would shift the image the wrong way.
  starts = max_shift - jnp.clip(offsets, -max_shift, max_shift)

  def crop(image, start):
    return jax.lax.dynamic_slice(image, (start[0], start[1], 0), (height, width, channels))

  return jax.vmap(crop)(padded, starts)


def random_shift(key: jax.Array, images: jnp.ndarray, max_shift: int) -> jnp.ndarray:
  """`translate`s each image by its own integer offset in [-max_shift, max_shift]^2.

  images (B, H, W, C) -> same shape. max_shift = 0 returns the images unchanged.
  """
  if max_shift == 0:
    return images
  # Drawn as crop starts in [0, 2 max_shift], as every committed run drew them.
  starts = jax.random.randint(key, (images.shape[0], 2), 0, 2 * max_shift + 1)
  return translate(images, max_shift - starts, max_shift)


def shear(images: jnp.ndarray, amounts: jnp.ndarray) -> jnp.ndarray:
  """Shears each image horizontally by its own amount: row i moves right by
  amount * (c - i) pixels, c = (H - 1) / 2 the middle row, so a positive amount makes
  the top lean right (the sign of `evaluation.ink_slant`). Linear interpolation
  along each row; pixels from outside the image are zero.

  A shear is the `elastic` displacement (0, -amount * (c - i)), and agrees with it to
  1e-6 (tests/test_augmentation.py). It keeps its own one-axis interpolation because
  that reads two neighbours, not four (2.7 and 11.5 times faster than `elastic` on a
  batch of 300 on the 2-core CPU, timed twice beside a training run), and because it
  is the arithmetic that every committed run with --augment_shear used, bit for bit.

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


def gaussian_smoothing_matrix(size: int, sigma: float) -> np.ndarray:
  """(size, size) M with M @ v the 1-D Gaussian smoothing of v, zeros beyond the ends.

  The kernel is scipy.ndimage.gaussian_filter's: normalised to sum 1 and truncated at
  4 sigma; beyond the ends the signal is 0 (its mode="constant").
  """
  radius = int(4 * sigma + 0.5)
  kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  kernel /= kernel.sum()
  offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
  inside = np.abs(offsets) <= radius
  return np.where(inside, kernel[np.clip(offsets + radius, 0, 2 * radius)], 0.0)


def smooth_field(noise: jnp.ndarray, sigma: float) -> jnp.ndarray:
  """Gaussian smoothing of (B, H, W, K) over H and W, each of the K channels alone.

  Two small matrix products (the Gaussian is separable), not a 33-tap convolution.
  """
  _, height, width, _ = noise.shape
  rows = jnp.asarray(gaussian_smoothing_matrix(height, sigma), noise.dtype)
  cols = jnp.asarray(gaussian_smoothing_matrix(width, sigma), noise.dtype)
  return jnp.einsum("ij,bjkc,lk->bilc", rows, noise, cols)


def elastic(images: jnp.ndarray, displacement: jnp.ndarray) -> jnp.ndarray:
  """Moves each pixel by its own displacement: out[b, i, j] reads images[b] at
  (i + dy, j + dx), (dy, dx) = displacement[b, i, j], with bilinear interpolation;
  neighbours outside the image are zero.

  images: float (B, H, W, C); displacement: (B, H, W, 2), (rows, columns) in pixels.
  Returns (B, H, W, C).
  """
  _, height, width, _ = images.shape
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=images.dtype),
                            jnp.arange(width, dtype=images.dtype), indexing="ij")

  def one(image, field):
    coordinates = [rows + field[..., 0], cols + field[..., 1]]
    read = lambda channel: jax.scipy.ndimage.map_coordinates(channel, coordinates, order=1)
    return jax.vmap(read, in_axes=-1, out_axes=-1)(image)

  return jax.vmap(one)(images, displacement)


def random_elastic(key: jax.Array, images: jnp.ndarray, alpha: float,
                   sigma: float = ELASTIC_SIGMA) -> jnp.ndarray:
  """Simard et al.'s elastic distortion, each image its own: a displacement field of
  independent uniform(-1, 1) values per pixel and axis, smoothed by a Gaussian of
  width sigma pixels (`smooth_field`) and scaled by alpha, moves the pixels (`elastic`).

  Simard et al. used alpha = 34, sigma = 4 on MNIST; there each displacement has a
  standard deviation of about 1.4 pixels (tests/test_augmentation.py measures it).
  alpha = 0 returns the images unchanged. images float (B, H, W, C) -> same shape.
  """
  if alpha == 0:
    return images
  batch, height, width, _ = images.shape
  noise = jax.random.uniform(key, (batch, height, width, 2), images.dtype, -1.0, 1.0)
  return elastic(images, alpha * smooth_field(noise, sigma))
