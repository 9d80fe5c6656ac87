r"""Validation confusion of finished runs: per-class error and the largest confusions.

  python -m benchmarks.confusion --runs=seed1=runs/bench/long25k-seed1 \
      --data_dir=../shared/data/mnist --output=benchmarks/results/confusion.json

For each run, the classifier of its latest checkpoint classifies the run's own
validation split (rebuilt from its config: the same seed, label count and validation
size); prints the error, the error of each true class and the five most frequent
(true, predicted) confusions, and writes them as JSON. Validation only, never test.

With --generative_draws=D > 0 (the default, 8), each image is also classified by the
generative model itself: argmax_y L(x, y), averaged over D binarisations and z draws
(`evaluation.generative_predictions`). The unlabelled bound pulls q(y | x) toward that
class, so a confusion the generative model shares ("generative_agrees": how many of
its images the generative model also puts in the predicted class) is one the objective
holds in place; one it does not share is the classifier's alone.

With --draw=DIR, each run's --draw_confusions largest confusions are also drawn, one
PNG per run (DIR/confusions_<run>.png): for each confusion true -> predicted, a row of
the run's labelled images of the true class, a row of validation images misread as
the predicted class, and a row of validation images of the true class read right, so
that what sets the misread ones apart can be seen.
"""

import os

from absl import app, flags
import jax
import numpy as np

from benchmarks.finished_runs import finished_runs
from ievae_jax import checkpointing, evaluation, figures

flags.DEFINE_list("runs", None, "name=workdir pairs.", required=True)
flags.DEFINE_string("data_dir", None, "IDX directory (default: $IEVAE_DATA_DIR, else TFDS).")
flags.DEFINE_string("output", None, "JSON path (optional).")
flags.DEFINE_integer("generative_draws", 8, "Binarisations and z draws averaged for "
                     "argmax_y L(x, y); 0 skips the generative model's classification.")
flags.DEFINE_string("draw", None, "Folder for one PNG per run of its largest confusions.")
flags.DEFINE_integer("draw_confusions", 2, "Confusions drawn per run (with --draw).")
flags.DEFINE_integer("draw_per_row", 20, "Images per row (with --draw).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  results = {}
  for run in finished_runs(FLAGS.runs, FLAGS.data_dir):
    predictions = evaluation.predict(run.params, run.splits.validation_images)
    row = results[run.name] = {"workdir": run.workdir, **evaluation.confusion_summary(
        run.splits.validation_labels, predictions, run.config.model.num_classes)}
    if FLAGS.generative_draws > 0:
      _add_generative(row, run, predictions)
    if FLAGS.draw:
      os.makedirs(FLAGS.draw, exist_ok=True)
      figures.save_confusions(
          row["top_confusions"][:FLAGS.draw_confusions], run.splits.labelled_images,
          run.splits.labelled_labels, run.splits.validation_images,
          run.splits.validation_labels, predictions,
          os.path.join(FLAGS.draw, f"confusions_{run.name}.png"),
          f"{run.name}: largest validation confusions", FLAGS.draw_per_row)
    print(f"{run.name}: validation error {row['error']:.4f}; per class "
          + " ".join(f"{e:.3f}" for e in row["per_class_error"]) + "; largest confusions "
          + ", ".join(f"{c['true']}->{c['predicted']} ({c['count']})"
                      for c in row["top_confusions"])
          + "; KL(predicted || true class shares) "
          + ("undefined" if row["share_kl"] is None else f"{row['share_kl']:.4f}"))
    if "generative_error" in row:
      print(f"  argmax_y L(x, y): validation error {row['generative_error']:.4f}, agrees with "
            f"q(y | x) on {row['generative_agreement']:.3f}; shares the confusions "
            + ", ".join(f"{c['true']}->{c['predicted']} ({c['generative_agrees']} of "
                        f"{c['count']})" for c in row["top_confusions"]))
  if FLAGS.output:
    checkpointing.write_json_atomically(FLAGS.output, results)


def _add_generative(row: dict, run, predictions: np.ndarray) -> None:
  """Adds the generative model's validation error, its agreement with q(y | x) and, to
  each top confusion, how many of its images argmax_y L(x, y) also misreads so."""
  labels = run.splits.validation_labels
  generative = evaluation.generative_predictions(
      run.params, run.splits.validation_images, jax.random.key(0), FLAGS.generative_draws)
  row["generative_draws"] = FLAGS.generative_draws
  row["generative_error"] = float(np.mean(generative != labels))
  row["generative_agreement"] = float(np.mean(generative == predictions))
  for confusion in row["top_confusions"]:
    images = (labels == confusion["true"]) & (predictions == confusion["predicted"])
    confusion["generative_agrees"] = int(np.sum(generative[images] == confusion["predicted"]))


if __name__ == "__main__":
  app.run(main)
