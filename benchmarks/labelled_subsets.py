r"""Draws the labelled images that given seeds pick, some classes per row: a PNG; and
measures their slant against the slant of the validation images a run gets wrong.

  python -m benchmarks.labelled_subsets --seeds=0,1,2 --classes=1,7,8,9 \
      --data_dir=../shared/data/mnist \
      --output=benchmarks/results/labelled_subsets_labels100.png \
      --runs=seed1_25k=runs/bench/long25k-seed1,seed0_25k=runs/bench/long25k-seed0 \
      --slant_output=benchmarks/results/labelled_slant_labels100.json

One block of rows per seed (separated by a grey line), one row per class, the
labels / K labelled images of that class from left to right: the subset that
`--seed` (or `--label_seed`) gives a run (data.make_splits), to see what the
classifier's few examples of a class do and do not show.

Slant is `evaluation.ink_slant`: 0 for an upright stroke, positive when the top
leans right. With --runs
(name=workdir), for every class in --classes it gives the slant of the run's
labelled images and the mean slant of the run's validation images of the
class, grouped by the class the run predicts.
"""

import numpy as np
from absl import app, flags
from PIL import Image

from benchmarks.finished_runs import finished_runs
from ievae_jax import checkpointing, data, evaluation

flags.DEFINE_list("seeds", ["0", "1", "2"], "Label seeds, one block each.")
flags.DEFINE_list("classes", ["1", "7", "8", "9"], "Classes, one row each.")
flags.DEFINE_integer("labels", 100, "Labelled examples of the run (a multiple of K).")
flags.DEFINE_integer("validation_size", 5000, "The run's validation split.")
flags.DEFINE_string("dataset", "mnist", "mnist | fashion_mnist.")
flags.DEFINE_string("data_dir", None, "IDX directory (default: $IEVAE_DATA_DIR, else TFDS).")
flags.DEFINE_integer("zoom", 2, "Pixels per image pixel.")
flags.DEFINE_string("output", "labelled_subsets.png", "PNG path.")
flags.DEFINE_list("runs", [], "name=workdir pairs whose validation errors to measure.")
flags.DEFINE_string("slant_output", None, "JSON path for the slant measures (optional).")
FLAGS = flags.FLAGS


def _slant_report() -> dict:
  report = {}
  for run in finished_runs(FLAGS.runs, FLAGS.data_dir):
    name, splits, seed = run.name, run.splits, run.config.labelled_subset_seed
    predicted = evaluation.predict(run.params, splits.validation_images)
    slant = evaluation.ink_slant(splits.validation_images)
    report[name] = {"workdir": run.workdir, "label_seed": seed, "classes": {}}
    for c in map(int, FLAGS.classes):
      labelled = evaluation.ink_slant(splits.labelled_images[splits.labelled_labels == c])
      of_class = splits.validation_labels == c
      by_prediction = {}
      for p in np.unique(predicted[of_class]):
        chosen = of_class & (predicted == p)
        by_prediction[int(p)] = {"count": int(chosen.sum()),
                                 "mean_slant": float(slant[chosen].mean())}
      report[name]["classes"][c] = {
          "labelled_slant": [round(float(v), 3) for v in labelled],
          "validation_by_prediction": by_prediction}
      print(f"{name} (label seed {seed}), class {c}: labelled slant {labelled.min():.3f} to "
            f"{labelled.max():.3f} (mean {labelled.mean():.3f}); validation images by "
            "prediction: " + ", ".join(f"{p}: {v['count']} at mean slant {v['mean_slant']:.3f}"
                                       for p, v in by_prediction.items() if v["count"] >= 5))
  return report


def main(argv):
  del argv
  arrays = data.load(FLAGS.dataset, FLAGS.data_dir)
  num_classes = data.NUM_CLASSES[FLAGS.dataset]
  rows = []
  for seed in map(int, FLAGS.seeds):
    splits = data.make_splits(arrays, num_classes, FLAGS.labels, FLAGS.validation_size, seed)
    for c in map(int, FLAGS.classes):
      images = splits.labelled_images[splits.labelled_labels == c][..., 0]
      rows.append(np.concatenate(list(images), axis=1))
    rows.append(np.full((2, rows[-1].shape[1]), 128, np.uint8))
  grid = np.concatenate(rows[:-1], axis=0)
  Image.fromarray(grid).resize((grid.shape[1] * FLAGS.zoom, grid.shape[0] * FLAGS.zoom),
                               Image.NEAREST).save(FLAGS.output)
  print(f"wrote {FLAGS.output}: seeds {', '.join(FLAGS.seeds)} (top to bottom), classes "
        f"{', '.join(FLAGS.classes)} in each block")
  if FLAGS.runs:
    report = _slant_report()
    if FLAGS.slant_output:
      checkpointing.write_json_atomically(FLAGS.slant_output, report)


if __name__ == "__main__":
  app.run(main)
