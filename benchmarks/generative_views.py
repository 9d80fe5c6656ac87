r"""What the generative consistency's second views are, for finished runs.

  python -m benchmarks.generative_views \
      --runs=seed0=runs/bench/semisup100-seed0-ext-shear025-cons50-gentransfer50-lr2e-3-25k \
      --data_dir=../shared/data/mnist --draw=benchmarks/results/generative_views \
      --output=benchmarks/results/generative_views.json

For each run, the latest checkpoint draws `objective.generative_view` of every image
of the run's validation split (binarised once, as training binarises the unlabelled
batch; key 0), for both sources ("reconstruction", "transfer"), as the term sees them
in training: y_hat = argmax q(y | x), then a binary draw of p(x | y_hat, z). Printed
and written per source:
  - `view_reads_as_y_hat`: how often the classifier reads x' as y_hat, i.e. how often
    the term's target and the view agree at the argmax;
  - `view_reads_as_label`: how often it reads x' as x's true label;
  - `kl`: the mean KL(q(y | x) || q(y | x')), the term's value before its weight;
  - `y_hat_error`: how often y_hat is not x's true label (the term's target is wrong).
Validation only, never test. With --draw=DIR, one PNG per run: for one validation image
of each class, the image, its reconstruction view and its transfer view (probabilities).
"""

import os

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.finished_runs import finished_runs
from ievae_jax import checkpointing, evaluation, figures, model, objective
from ievae_jax import step as step_lib
from ievae_jax.config import GENERATIVE_VIEWS

flags.DEFINE_list("runs", None, "name=workdir pairs.", required=True)
flags.DEFINE_string("data_dir", None, "IDX directory (default: $IEVAE_DATA_DIR, else TFDS).")
flags.DEFINE_string("output", None, "JSON path (optional).")
flags.DEFINE_string("draw", None, "Folder for one PNG per run (optional).")
flags.DEFINE_integer("batch", 100, "Images per batch: the transfer view takes the z of "
                     "the image before within one, as in a training batch of 100.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  results = {}
  for run in finished_runs(FLAGS.runs, FLAGS.data_dir):
    labels = run.splits.validation_labels
    binary_key, view_key = jax.random.split(jax.random.key(0))
    images = np.asarray(step_lib.pixel_targets(binary_key, run.splits.validation_images))
    row = results[run.name] = {"workdir": run.workdir}
    for source in GENERATIVE_VIEWS:
      row[source] = evaluation.generative_view_statistics(run.params, images, labels, view_key,
                                                        source, FLAGS.batch)
      print(f"{run.name}, {source}: view read as y_hat {row[source]['view_reads_as_y_hat']:.4f},"
            f" as the true label {row[source]['view_reads_as_label']:.4f}; mean KL "
            f"{row[source]['kl']:.4f}; y_hat wrong for {row[source]['y_hat_error']:.4f}")
    if FLAGS.draw:
      os.makedirs(FLAGS.draw, exist_ok=True)
      _draw(run, images, os.path.join(FLAGS.draw, f"generative_views_{run.name}.png"))
  if FLAGS.output:
    checkpointing.write_json_atomically(FLAGS.output, results)


def _draw(run, images: np.ndarray, path: str) -> None:
  """One row per class: a validation image, its reconstruction and its transfer view."""
  labels = run.splits.validation_labels
  num_classes = run.config.model.num_classes
  picks = [int(np.flatnonzero(labels == k)[0]) for k in range(num_classes)]
  x = jnp.asarray(images[picks])
  logits = model.classify(run.params, x)
  views = [objective.generative_view(run.params, x, logits, jax.random.key(0), source, True)
           for source in GENERATIVE_VIEWS]
  grid = np.stack([np.asarray(x)] + [np.asarray(v) for v in views], axis=1)
  y_hat = np.argmax(np.asarray(logits), axis=-1)
  figures.save_grid(grid, path, f"{run.name}: x and its views\n"
                    "(transfer: z of the row above)", col_labels=["x", *GENERATIVE_VIEWS],
                    row_labels=[f"{k}, read {y}" for k, y in enumerate(y_hat)])


if __name__ == "__main__":
  app.run(main)
