r"""Test-time augmentation of finished runs: does averaging q(y | x) over views help?

  python -m benchmarks.view_averaging \
      --runs=seed0=runs/bench/semisup100-seed0-ext-shear025-cons50-ubatch200-lr2e-3-15k \
      --data_dir=../shared/data/mnist --output=benchmarks/results/view_averaging.json

For each run, the classifier of its latest checkpoint reads the run's own validation
split (validation only, never test) once as it is (`plain`, the error training
reports) and then as the argmax of q(y | x) averaged, as probabilities, over views of
each image:
- `shift1`: the 9 translations by -1, 0 or 1 pixel per axis (zero fill);
- `slant`: horizontal shears of -0.15, 0 and 0.15 (`augmentation.shear`);
- `shift1_slant`: the 27 combinations of the two;
- `random`: the image and --random_views random views drawn as the run's training
  draws them (its --augment_shear and --augment_shift), on grey levels;
- `random_binarised`: the same with each view binarised, as training binarises;
- `binarised`: --random_views binarisations, nothing else.
An extension beyond the paper, and a post-hoc one: nothing is trained. On three
seed-0 runs of the extensions it was level on average (ACCURACY_LOG, fortieth pass).
"""

import itertools
from typing import Callable, Dict

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.finished_runs import finished_runs
from ievae_jax import augmentation, checkpointing, evaluation, model

FLAGS = flags.FLAGS

SLANTS = (-0.15, 0.0, 0.15)
SHIFTS = (-1, 0, 1)


def grid_views(grey: jnp.ndarray, shifts, slants):
  """Every (shift, shift, slant) view of grey images (B, H, W, C), one at a time."""
  for dy, dx, slant in itertools.product(shifts, shifts, slants):
    slanted = augmentation.shear(grey, jnp.full(grey.shape[:1], slant)) if slant else grey
    offsets = jnp.tile(jnp.array([dy, dx]), (grey.shape[0], 1))
    yield augmentation.translate(slanted, offsets, max(abs(dy), abs(dx)))


def random_views(grey: jnp.ndarray, key: jax.Array, count: int, max_shift: int,
                 max_shear: float, binarise: bool):
  """`count` views drawn as a training step draws them: shear, binarise, shift."""
  for view_key in jax.random.split(key, count):
    shear_key, pixel_key, shift_key = jax.random.split(view_key, 3)
    view = augmentation.random_shear(shear_key, grey, max_shear)
    if binarise:
      view = jax.random.bernoulli(pixel_key, view).astype(jnp.float32)
    yield augmentation.random_shift(shift_key, view, max_shift)


def averaged_error(probabilities: Callable, views, labels: np.ndarray) -> float:
  """Error of argmax_y of q(y | view) summed over views; probabilities(view) -> (N, K)."""
  total = sum(probabilities(view) for view in views)
  return float(np.mean(np.argmax(total, -1) != labels))


def view_set_errors(params: model.Params, images: np.ndarray, labels: np.ndarray,
                    key: jax.Array, max_shift: int, max_shear: float,
                    count: int) -> Dict[str, float]:
  """The validation error of each view set in the module docstring; images uint8."""
  classify = jax.jit(lambda x: jax.nn.softmax(model.classify(params, x), -1))
  probabilities = lambda x: evaluation.batched(classify, np.asarray(x))
  grey = evaluation.grey(jnp.asarray(images))
  keys = jax.random.split(key, 3)
  plain = [grey]
  return {
      "plain": averaged_error(probabilities, plain, labels),
      "shift1": averaged_error(probabilities, grid_views(grey, SHIFTS, (0.0,)), labels),
      "slant": averaged_error(probabilities, grid_views(grey, (0,), SLANTS), labels),
      "shift1_slant": averaged_error(probabilities, grid_views(grey, SHIFTS, SLANTS), labels),
      "random": averaged_error(probabilities, itertools.chain(plain, random_views(
          grey, keys[0], count, max_shift, max_shear, False)), labels),
      "random_binarised": averaged_error(probabilities, itertools.chain(plain, random_views(
          grey, keys[1], count, max_shift, max_shear, True)), labels),
      "binarised": averaged_error(probabilities, random_views(
          grey, keys[2], count, 0, 0.0, True), labels),
  }


def main(argv):
  del argv
  results = {"random_views": FLAGS.random_views, "slants": SLANTS, "shifts": SHIFTS}
  for run in finished_runs(FLAGS.runs, FLAGS.data_dir):
    errors = view_set_errors(run.params, run.splits.validation_images,
                             run.splits.validation_labels, jax.random.key(0),
                             run.config.augment_shift, run.config.augment_shear,
                             FLAGS.random_views)
    results[run.name] = {"workdir": run.workdir, "validation_error": errors}
    print(f"{run.name}: validation error " + ", ".join(f"{k} {v:.4f}" for k, v in errors.items()),
          flush=True)
  if FLAGS.output:
    checkpointing.write_json_atomically(FLAGS.output, results)


def define_flags():
  """Defined only when run as a script, so that tests can import the functions beside
  other benchmarks' flags of the same names."""
  flags.DEFINE_list("runs", None, "name=workdir pairs.", required=True)
  flags.DEFINE_string("data_dir", None, "IDX directory (default: $IEVAE_DATA_DIR, else TFDS).")
  flags.DEFINE_string("output", None, "JSON path (optional).")
  flags.DEFINE_integer("random_views", 16, "Views drawn for the random view sets.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
