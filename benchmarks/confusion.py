r"""Validation confusion of finished runs: per-class error and the largest confusions.

  python -m benchmarks.confusion --runs=seed1=runs/bench/long25k-seed1 \
      --data_dir=../shared/data/mnist --output=benchmarks/results/confusion.json

For each run, the classifier of its latest checkpoint classifies the run's own
validation split (rebuilt from its config: the same seed, label count and validation
size); prints the error, the error of each true class and the five most frequent
(true, predicted) confusions, and writes them as JSON. Validation only, never test.
"""

import json
import logging
import os

from absl import app, flags

from ievae_jax import checkpointing, data, evaluation
from ievae_jax.config import TrainConfig

flags.DEFINE_list("runs", None, "name=workdir pairs.", required=True)
flags.DEFINE_string("data_dir", None, "IDX directory (default: $IEVAE_DATA_DIR, else TFDS).")
flags.DEFINE_string("output", None, "JSON path (optional).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.getLogger("absl").setLevel(logging.WARNING)   # orbax logs every restore at INFO
  arrays_by_dataset = {}
  results = {}
  for pair in FLAGS.runs:
    name, workdir = pair.split("=", 1)
    with open(os.path.join(workdir, checkpointing.CONFIG_FILE)) as f:
      config = TrainConfig.from_dict(json.load(f))
    if config.dataset not in arrays_by_dataset:
      arrays_by_dataset[config.dataset] = data.load(config.dataset, FLAGS.data_dir)
    num_classes = config.model.num_classes
    splits = data.make_splits(arrays_by_dataset[config.dataset], num_classes, config.labels,
                              config.validation_size, config.labelled_subset_seed)
    predictions = evaluation.predict(checkpointing.load(workdir), splits.validation_images)
    results[name] = {"workdir": workdir, **evaluation.confusion_summary(
        splits.validation_labels, predictions, num_classes)}
    row = results[name]
    print(f"{name}: validation error {row['error']:.4f}; per class "
          + " ".join(f"{e:.3f}" for e in row["per_class_error"]) + "; largest confusions "
          + ", ".join(f"{c['true']}->{c['predicted']} ({c['count']})"
                      for c in row["top_confusions"]))
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
