r"""Validation confusion of finished runs: per-class error and the largest confusions.

  python -m benchmarks.confusion --runs=seed1=runs/bench/long25k-seed1 \
      --data_dir=../shared/data/mnist --output=benchmarks/results/confusion.json

For each run, the classifier of its latest checkpoint classifies the run's own
validation split (rebuilt from its config: the same seed, label count and validation
size); prints the error, the error of each true class and the five most frequent
(true, predicted) confusions, and writes them as JSON. Validation only, never test.
"""

from absl import app, flags

from benchmarks.finished_runs import finished_runs
from ievae_jax import checkpointing, evaluation

flags.DEFINE_list("runs", None, "name=workdir pairs.", required=True)
flags.DEFINE_string("data_dir", None, "IDX directory (default: $IEVAE_DATA_DIR, else TFDS).")
flags.DEFINE_string("output", None, "JSON path (optional).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  results = {}
  for run in finished_runs(FLAGS.runs, FLAGS.data_dir):
    predictions = evaluation.predict(run.params, run.splits.validation_images)
    row = results[run.name] = {"workdir": run.workdir, **evaluation.confusion_summary(
        run.splits.validation_labels, predictions, run.config.model.num_classes)}
    print(f"{run.name}: validation error {row['error']:.4f}; per class "
          + " ".join(f"{e:.3f}" for e in row["per_class_error"]) + "; largest confusions "
          + ", ".join(f"{c['true']}->{c['predicted']} ({c['count']})"
                      for c in row["top_confusions"]))
  if FLAGS.output:
    checkpointing.write_json_atomically(FLAGS.output, results)


if __name__ == "__main__":
  app.run(main)
