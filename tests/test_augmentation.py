"""Random translation, shear and elastic distortion (augmentation.py) and their use in
the training step."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ievae_jax import augmentation, evaluation, train_lib
from ievae_jax.config import ConfigError
from tests.conftest import tiny_model_config, tiny_train_config


def _find_offset(source, shifted, max_shift):
  """The (dy, dx) with shifted = source moved by (dy, dx), zeros shifted in; None if none."""
  height, width = source.shape
  padded = np.pad(source, max_shift)
  found = []
  for dy in range(-max_shift, max_shift + 1):
    for dx in range(-max_shift, max_shift + 1):
      window = padded[max_shift - dy:max_shift - dy + height, max_shift - dx:max_shift - dx + width]
      if np.array_equal(window, shifted):
        found.append((dy, dx))
  return found


def test_each_image_is_a_translate_of_its_source_within_the_limit():
  rng = np.random.default_rng(0)
  images = rng.integers(1, 255, size=(64, 12, 12, 1)).astype(np.float32)  # no zeros: unambiguous
  shifted = np.asarray(augmentation.random_shift(jax.random.key(3), jnp.asarray(images), 2))
  assert shifted.shape == images.shape
  offsets = []
  for source, out in zip(images[..., 0], shifted[..., 0]):
    found = _find_offset(source, out, 2)
    assert len(found) == 1, "not a translate of its source by at most 2 pixels"
    offsets.append(found[0])
  # Independent offsets per image, covering the whole range.
  assert len(set(offsets)) > 12
  assert {o[0] for o in offsets} == set(range(-2, 3))


def _shifted_by_loop(image, dy, dx):
  """image (H, W, C) moved down dy and right dx pixels, zero-filled, pixel by pixel."""
  height, width = image.shape[:2]
  expected = np.zeros_like(image)
  for i in range(height):
    for j in range(width):
      if 0 <= i - dy < height and 0 <= j - dx < width:
        expected[i, j] = image[i - dy, j - dx]
  return expected


def test_translate_moves_each_image_by_its_offset_with_zero_fill():
  """`translate` against a loop over pixels, one offset per image."""
  rng = np.random.default_rng(0)
  images = rng.random((3, 5, 6, 1)).astype(np.float32)
  offsets = np.array([(1, -1), (-2, 0), (0, 3)])
  moved = np.asarray(augmentation.translate(jnp.asarray(images), jnp.asarray(offsets), 3))
  for image, (dy, dx), out in zip(images, offsets, moved):
    np.testing.assert_array_equal(out, _shifted_by_loop(image, dy, dx))


def test_translate_clips_offsets_beyond_max_shift():
  """An offset past max_shift moves the image by max_shift, never wraps or reads
  outside the padding."""
  rng = np.random.default_rng(1)
  images = rng.random((2, 6, 6, 1)).astype(np.float32)
  offsets = jnp.array([(5, -7), (-3, 9)])
  too_far = np.asarray(augmentation.translate(jnp.asarray(images), offsets, 2))
  for image, (dy, dx), out in zip(images, [(2, -2), (-2, 2)], too_far):
    np.testing.assert_array_equal(out, _shifted_by_loop(image, dy, dx))


def test_zero_shift_is_the_identity():
  images = jnp.arange(2 * 5 * 5, dtype=jnp.float32).reshape(2, 5, 5, 1)
  np.testing.assert_array_equal(augmentation.random_shift(jax.random.key(0), images, 0), images)


def _shear_reference(image, amount):
  """Per-pixel loop: out[i, j] interpolates row i of `image` at column j - amount * (c - i)."""
  height, width = image.shape
  out = np.zeros_like(image)
  for i in range(height):
    for j in range(width):
      source = j - amount * ((height - 1) / 2 - i)
      left = int(np.floor(source))
      frac = source - left
      pixel = lambda col: image[i, col] if 0 <= col < width else 0.0
      out[i, j] = (1 - frac) * pixel(left) + frac * pixel(left + 1)
  return out


def test_shear_matches_a_per_pixel_loop():
  rng = np.random.default_rng(1)
  images = rng.uniform(size=(4, 9, 7, 1)).astype(np.float32)
  amounts = np.array([0.0, 0.37, -0.8, 1.0], np.float32)
  sheared = np.asarray(augmentation.shear(jnp.asarray(images), jnp.asarray(amounts)))
  for image, amount, out in zip(images[..., 0], amounts, sheared[..., 0]):
    np.testing.assert_allclose(out, _shear_reference(image, amount), atol=1e-6)
  np.testing.assert_allclose(sheared[0], images[0], atol=1e-6)  # amount 0: unchanged


def test_random_shear_slants_digits_by_amounts_within_the_limit(small_mnist_dir):
  """The sheared digit's ink_slant moves by the drawn amount (so the sign convention is
  ink_slant's: positive leans the top right), each image its own, all within the limit."""
  from ievae_jax import data
  images = data.load("mnist", small_mnist_dir)["train_images"][:64].astype(np.float32) / 255
  sheared = np.asarray(augmentation.random_shear(jax.random.key(5), jnp.asarray(images), 0.4))
  moved = evaluation.ink_slant(sheared) - evaluation.ink_slant(images)
  assert np.all(np.abs(moved) <= 0.4 + 0.02)
  assert moved.min() < -0.25 and moved.max() > 0.25        # spread over the range
  assert len(np.unique(np.round(moved, 3))) > 50            # independent per image
  np.testing.assert_allclose(sheared.sum((1, 2, 3)), images.sum((1, 2, 3)), rtol=0.02)  # ink kept
  np.testing.assert_array_equal(augmentation.random_shear(jax.random.key(0), images, 0.0), images)


def test_field_smoothing_matches_scipy_gaussian_filter():
  from scipy import ndimage
  noise = np.random.default_rng(2).uniform(-1, 1, size=(3, 28, 20, 2)).astype(np.float32)
  smoothed = np.asarray(augmentation.smooth_field(jnp.asarray(noise), 4.0))
  for b in range(3):
    for c in range(2):
      reference = ndimage.gaussian_filter(noise[b, :, :, c].astype(np.float64), 4.0,
                                          mode="constant", truncate=4.0)
      np.testing.assert_allclose(smoothed[b, :, :, c], reference, atol=1e-6)


def _elastic_reference(image, field):
  """Per-pixel loop: out[i, j] interpolates `image` bilinearly at (i + dy, j + dx),
  each of the four neighbours outside the image read as 0."""
  height, width = image.shape
  pixel = lambda r, c: image[r, c] if 0 <= r < height and 0 <= c < width else 0.0
  out = np.zeros_like(image)
  for i in range(height):
    for j in range(width):
      row, col = i + field[i, j, 0], j + field[i, j, 1]
      top, left = int(np.floor(row)), int(np.floor(col))
      fr, fc = row - top, col - left
      out[i, j] = ((1 - fr) * (1 - fc) * pixel(top, left) + (1 - fr) * fc * pixel(top, left + 1)
                   + fr * (1 - fc) * pixel(top + 1, left) + fr * fc * pixel(top + 1, left + 1))
  return out


def test_elastic_matches_a_per_pixel_loop():
  rng = np.random.default_rng(3)
  images = rng.uniform(size=(3, 9, 7, 2)).astype(np.float32)
  fields = rng.uniform(-3, 3, size=(3, 9, 7, 2)).astype(np.float32)
  fields[2] = 0.0
  fields[2, ..., 1] = 1.0                                  # every pixel reads its right neighbour
  moved = np.asarray(augmentation.elastic(jnp.asarray(images), jnp.asarray(fields)))
  for b in range(3):
    for c in range(2):
      np.testing.assert_allclose(moved[b, :, :, c], _elastic_reference(images[b, :, :, c],
                                                                       fields[b]), atol=1e-5)
  np.testing.assert_allclose(moved[2, :, :-1], images[2, :, 1:], atol=1e-6)   # a shift left
  np.testing.assert_array_equal(moved[2, :, -1], 0.0)


def test_shear_is_the_elastic_displacement_along_rows():
  """shear and elastic carry their own interpolation; they must agree where they overlap."""
  rng = np.random.default_rng(4)
  batch, height, width = 5, 9, 7
  images = rng.uniform(size=(batch, height, width, 2)).astype(np.float32)
  amounts = rng.uniform(-1.5, 1.5, size=batch).astype(np.float32)
  rows = np.arange(height)[None, :, None]
  column_moves = -amounts[:, None, None] * ((height - 1) / 2 - rows)
  field = np.stack(np.broadcast_arrays(np.zeros((batch, height, width)), column_moves),
                   -1).astype(np.float32)
  np.testing.assert_allclose(augmentation.shear(jnp.asarray(images), jnp.asarray(amounts)),
                             augmentation.elastic(jnp.asarray(images), jnp.asarray(field)),
                             atol=1e-6)


def test_random_elastic_distorts_each_digit_by_about_simards_amount(small_mnist_dir):
  """alpha = 34, sigma = 4 (Simard et al.'s MNIST setting): displacements of about 1.4
  pixels, each image its own; the digit keeps its ink and stays near its place."""
  from ievae_jax import data
  images = data.load("mnist", small_mnist_dir)["train_images"][:32].astype(np.float32) / 255
  key = jax.random.key(7)
  noise = jax.random.uniform(key, (32, 28, 28, 2), jnp.float32, -1.0, 1.0)
  field = 34.0 * np.asarray(augmentation.smooth_field(noise, augmentation.ELASTIC_SIGMA))
  assert 1.0 < field.std() < 1.8
  distorted = np.asarray(augmentation.random_elastic(key, jnp.asarray(images), 34.0))
  np.testing.assert_allclose(distorted, np.asarray(augmentation.elastic(jnp.asarray(images),
                                                                        jnp.asarray(field))),
                             atol=1e-5)
  change = np.abs(distorted - images).mean((1, 2, 3))
  assert change.min() > 0.01 and len(np.unique(np.round(change, 5))) == 32
  # Ink is kept on average (locally the field compresses or stretches strokes).
  ink = distorted.sum((1, 2, 3)) / images.sum((1, 2, 3))
  assert abs(np.median(ink) - 1) < 0.1 and ink.min() > 0.4
  rows = np.arange(28.0)[None, :, None, None]
  centre = lambda x: (x * rows).sum((1, 2, 3)) / x.sum((1, 2, 3))
  moved = np.abs(centre(distorted) - centre(images))          # field: sd 1.4, max about 4
  assert np.median(moved) < 1.5 and moved.max() < 4
  np.testing.assert_array_equal(augmentation.random_elastic(key, images, 0.0), images)


def test_training_step_with_and_without_augmentation(small_mnist_dir):
  from ievae_jax import data
  arrays = data.load("mnist", small_mnist_dir)
  labelled = {"image": arrays["train_images"][:10],
              "label": arrays["train_labels"][:10].astype(np.int32)}
  unlabelled = {"image": arrays["train_images"][10:20]}
  losses = {}
  for shift in (0, 2):
    config = tiny_train_config(augment_shift=shift)
    step = train_lib.make_train_step(config, alpha=1.0)
    state = train_lib.create_train_state(jax.random.key(0), config)
    _, metrics = step(state, labelled, unlabelled)
    losses[shift] = float(metrics["loss"])
  assert np.isfinite(losses[2]) and losses[2] != losses[0]
  # Consistency across two shifted views, the class-balance term and virtual
  # adversarial training: each the same bound, plus its weighted, reported KL term.
  for setting, weight, term in (("consistency_weight", 5.0, "consistency"),
                                ("balance_weight", 7.0, "class_balance"),
                                ("vat_weight", 3.0, "virtual_adversarial"),
                                ("generative_weight", 4.0, "generative_consistency")):
    config = tiny_train_config(augment_shift=2, **{setting: weight})
    state = train_lib.create_train_state(jax.random.key(0), config)
    _, metrics = train_lib.make_train_step(config, alpha=1.0)(state, labelled, unlabelled)
    assert float(metrics[term]) > 0
    np.testing.assert_allclose(float(metrics["loss"]) - weight * float(metrics[term]),
                               losses[2], rtol=1e-5)
  # Shear alone, elastic distortion alone, each with and without consistency: other
  # images, hence another loss.
  for augment, extra in itertools.product(({"augment_shear": 0.5}, {"augment_elastic": 34.0}),
                                          ({}, {"consistency_weight": 5.0})):
    config = tiny_train_config(**augment, **extra).validate()  # each alone serves consistency
    state = train_lib.create_train_state(jax.random.key(0), config)
    _, metrics = train_lib.make_train_step(config, alpha=1.0)(state, labelled, unlabelled)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) != losses[0]


@pytest.mark.parametrize("setting, message", [
    ({"augment_shift": -1}, "--augment_shift must be an integer in [0, image size)"),
    ({"augment_shift": 28}, "--augment_shift must be an integer in [0, image size)"),
    ({"kl_weight": 0.0}, "--kl_weight must be positive"),
    ({"entropy_weight": 0.0}, "--entropy_weight must be positive"),
    ({"entropy_anneal_steps": -1}, "--entropy_anneal_steps must be an integer >= 0"),
    ({"consistency_weight": -1.0}, "--consistency_weight must be >= 0"),
    ({"consistency_weight": 1.0},
     "set --augment_shift, --augment_shear, --augment_elastic or --view_elastic too"),
    ({"augment_elastic": -1.0}, "--augment_elastic must be in [0, 100]"),
    ({"augment_elastic": 340.0}, "--augment_elastic must be in [0, 100]"),
    ({"view_elastic": -1.0}, "--view_elastic must be in [0, 100]"),
    ({"view_elastic": 340.0, "consistency_weight": 1.0}, "--view_elastic must be in [0, 100]"),
    ({"view_elastic": 16.0}, "set --consistency_weight too"),
    ({"teacher_decay": 1.0, "augment_shift": 2, "consistency_weight": 1.0},
     "--teacher_decay must be in [0, 1)"),
    ({"teacher_decay": -0.5}, "--teacher_decay must be in [0, 1)"),
    ({"teacher_decay": 0.99}, "set --consistency_weight too"),
    ({"balance_weight": -1.0}, "--balance_weight must be >= 0"),
    ({"vat_weight": -1.0}, "--vat_weight must be >= 0"),
    ({"vat_epsilon": 0.0}, "--vat_epsilon must be positive"),
    ({"generative_weight": -1.0}, "--generative_weight must be >= 0"),
    ({"generative_view": "prior"}, "Unknown generative_view 'prior'; use one of reconstruction, transfer"),
    ({"generative_weight": 1.0, "model": tiny_model_config(kind="vae")},
     "has no classes. Use --model=ievae or --model=m2"),
    ({"generative_steps": -1, "generative_weight": 1.0},
     "--generative_steps must be an integer >= 0"),
    ({"generative_steps": 100}, "set --generative_weight too"),
    ({"augment_shear": -0.1}, "--augment_shear must be in [0, 1]"),
    ({"augment_shear": 1.5}, "--augment_shear must be in [0, 1]"),
    ({"classifier_input": "colour"}, "Unknown classifier_input 'colour'; use one of binary, grey"),
])
def test_bad_settings_are_refused(setting, message):
  with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
    tiny_train_config(**setting).validate()


def test_pixel_targets_binary_draws_and_grey_levels():
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, size=(400, 6, 6, 1)), jnp.uint8)
  grey = np.asarray(images, np.float32) / 255.0
  np.testing.assert_allclose(train_lib.pixel_targets(jax.random.key(0), images, binarise=False),
                             grey, rtol=0, atol=1e-7)
  binary = np.asarray(train_lib.pixel_targets(jax.random.key(0), images, binarise=True))
  assert set(np.unique(binary)) <= {0.0, 1.0}
  assert not binary[grey == 0].any() and binary[grey == 1].all()
  # Each pixel is Bernoulli(intensity): over 14,400 draws the mean matches to ~3 sigma.
  assert abs(binary.mean() - grey.mean()) < 3 * 0.5 / np.sqrt(binary.size)
  assert np.corrcoef(binary.ravel(), grey.ravel())[0, 1] > 0.5


def test_grey_classifier_input_is_the_same_view_before_binarisation():
  """classifier_input="grey": the classifier's image is the grey view (same shift and
  shear) that the binary x was drawn from; without binarisation the two are one image."""
  from ievae_jax import step
  images = jnp.asarray(np.random.default_rng(2).integers(0, 256, size=(64, 28, 28, 1)), jnp.uint8)
  keys = [jax.random.key(i) for i in range(3)]
  config = tiny_train_config(augment_shift=2, augment_shear=0.5, classifier_input="grey")
  view = step.training_view(config, images, *keys)
  binary, grey = np.asarray(view["image"]), np.asarray(view["classifier_image"])
  assert set(np.unique(binary)) <= {0.0, 1.0} and len(np.unique(grey)) > 100
  # Each binary pixel was drawn from the grey pixel at the same place.
  assert not binary[grey == 0].any() and binary[grey >= 1 - 1e-6].all()
  inside = (grey > 0.05) & (grey < 0.95)
  assert abs(binary[inside].mean() - grey[inside].mean()) < 0.02
  # The binary image is the one classifier_input="binary" trains on, with no extra key.
  plain = step.training_view(tiny_train_config(augment_shift=2, augment_shear=0.5), images, *keys)
  assert set(plain) == {"image"}
  np.testing.assert_array_equal(plain["image"], binary)
  grey_only = step.training_view(tiny_train_config(augment_shift=2, binarise=False,
                                                   classifier_input="grey"), images, *keys)
  np.testing.assert_array_equal(grey_only["image"], grey_only["classifier_image"])


def test_view_elastic_distorts_the_consistency_view_alone(small_mnist_dir):
  """--view_elastic: the view training_view draws with elastic=a is the one a config with
  augment_elastic=a draws from the same keys; in a step it changes the consistency term
  only, while the labelled and unlabelled bounds (the target's and x's views) stay."""
  from ievae_jax import data, step
  arrays = data.load("mnist", small_mnist_dir)
  images = jnp.asarray(arrays["train_images"][:16])
  keys = [jax.random.key(i) for i in range(3)]
  weak = tiny_train_config(augment_shift=2, augment_shear=0.25)
  strong_view = step.training_view(weak, images, *keys, elastic=16.0)["image"]
  np.testing.assert_array_equal(
      strong_view,
      step.training_view(tiny_train_config(augment_shift=2, augment_shear=0.25,
                                           augment_elastic=16.0), images, *keys)["image"])
  assert np.abs(np.asarray(strong_view) - np.asarray(
      step.training_view(weak, images, *keys)["image"])).mean() > 0.01
  labelled = {"image": arrays["train_images"][:10],
              "label": arrays["train_labels"][:10].astype(np.int32)}
  unlabelled = {"image": arrays["train_images"][10:20]}
  metrics = {}
  for view_elastic in (0.0, 16.0):
    config = tiny_train_config(augment_shift=2, augment_shear=0.25, consistency_weight=5.0,
                               view_elastic=view_elastic).validate()
    state = train_lib.create_train_state(jax.random.key(0), config)
    _, metrics[view_elastic] = train_lib.make_train_step(config, alpha=1.0)(
        state, labelled, unlabelled)
  for term in ("labelled_elbo", "cross_entropy", "unlabelled_bound", "unlabelled_entropy"):
    assert float(metrics[16.0][term]) == float(metrics[0.0][term]), term
  assert float(metrics[16.0]["consistency"]) != float(metrics[0.0]["consistency"])
  # Alone it makes the two views differ, so consistency needs no other augmentation.
  tiny_train_config(consistency_weight=1.0, view_elastic=16.0).validate()


def test_training_step_with_grey_classifier_input(small_mnist_dir):
  """The step passes the grey view to the classifier: the same loss as "binary" when x is
  not binarised (x is then the grey view), another loss when it is."""
  from ievae_jax import data
  arrays = data.load("mnist", small_mnist_dir)
  labelled = {"image": arrays["train_images"][:10],
              "label": arrays["train_labels"][:10].astype(np.int32)}
  unlabelled = {"image": arrays["train_images"][10:20]}
  losses = {}
  for binarise in (True, False):
    for source in ("binary", "grey"):
      config = tiny_train_config(augment_shift=1, binarise=binarise, classifier_input=source)
      state = train_lib.create_train_state(jax.random.key(0), config)
      _, metrics = train_lib.make_train_step(config, alpha=1.0)(state, labelled, unlabelled)
      losses[binarise, source] = float(metrics["loss"])
  assert losses[False, "grey"] == losses[False, "binary"]
  assert np.isfinite(losses[True, "grey"]) and losses[True, "grey"] != losses[True, "binary"]
