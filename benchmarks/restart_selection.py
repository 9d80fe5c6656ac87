r"""Ranks finished runs of one labelled set by the unlabelled bound, which needs no label.

  python -m benchmarks.restart_selection \
      --runs=a=runs/bench/restart-a,b=runs/bench/restart-b \
      --data_dir=../shared/data/mnist --output=benchmarks/results/restart_selection.json

A semi-supervised run can settle on a bad assignment of a whole style of a class
(benchmarks/results/ACCURACY_LOG.md, "Where the errors are"). Restarts of one labelled set
(`--label_seed` fixed, `--seed` varied) differ in that; the question here is whether
the model's own objective, U(x) averaged over unlabelled training images, picks the
better restart without looking at a label beyond the labelled set.

For each run: the mean U(x) of its latest checkpoint over the first --num_images
images of its unlabelled pool (binarised once with a fixed key; the same noise for
every run), beside the validation and test errors its results.json recorded (shown,
never used to choose). Runs are grouped by labelled set (dataset, label count,
label seed); each group's choice is the run with the highest mean U, and every other
run's mean gap to it is given with the standard error of that paired difference.
--validation_breakdown splits that gap, measured on the validation images, by which
of the two runs classifies each image right (this reads validation labels, so it
explains a choice; it is never part of one).
"""

import collections
import json
import os

import jax
import numpy as np
from absl import app, flags

from benchmarks.finished_runs import finished_runs
from ievae_jax import checkpointing, evaluation, train_lib

flags.DEFINE_list("runs", None, "name=workdir pairs.", required=True)
flags.DEFINE_string("data_dir", None, "IDX directory (default: $IEVAE_DATA_DIR, else TFDS).")
flags.DEFINE_integer("num_images", 10000, "Unlabelled images per run (0: the whole pool).")
flags.DEFINE_integer("step", None, "Checkpoint step to rank (default: each run's latest). At "
                     "a step before the end, the validation error is the one metrics.jsonl "
                     "logged at that step and there is no test error.")
flags.DEFINE_bool("validation_breakdown", False, "Analysis only, never used to choose: also "
                  "compare U on the validation images, split by which of the two runs "
                  "classifies each image right, to see where the gap in U comes from.")
flags.DEFINE_string("output", None, "JSON path (optional).")
FLAGS = flags.FLAGS


def _read_results(workdir: str, step) -> dict:
  if step is not None:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      logged = [json.loads(line) for line in f]
    errors = [m["validation_error"] for m in logged
              if m.get("step") == step and "validation_error" in m]
    return {"validation_error": errors[-1] if errors else None, "test_error": None,
            "steps": step}
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    results = json.load(f)
  return {k: results.get(k) for k in ("validation_error", "test_error", "steps")}


def _paired(gap: np.ndarray) -> dict:
  n = len(gap)
  return {"count": n, "mean_gap": float(gap.mean()) if n else None,
          "standard_error": float(gap.std() / np.sqrt(n)) if n > 1 else None}


def _breakdown(chosen, other) -> dict:
  """U(chosen) - U(other) on validation images, by which run classifies them right."""
  (u_c, right_c), (u_o, right_o) = chosen, other
  gap = u_c - u_o
  return {"all": _paired(gap), "both_right": _paired(gap[right_c & right_o]),
          "only_chosen_right": _paired(gap[right_c & ~right_o]),
          "only_other_right": _paired(gap[~right_c & right_o]),
          "both_wrong": _paired(gap[~right_c & ~right_o])}


def main(argv):
  del argv
  if FLAGS.num_images < 0:
    raise app.UsageError(f"--num_images must be >= 0, got {FLAGS.num_images}.")
  rows, bounds_of, validation_of = {}, {}, {}
  groups = collections.defaultdict(list)
  for run in finished_runs(FLAGS.runs, FLAGS.data_dir, FLAGS.step):
    name, workdir, config, splits, params = run
    if config.labels is None:
      raise app.UsageError(f"{workdir} is a supervised run; there is no unlabelled pool.")
    # One binarisation and one z noise (keys 0 and 1) for every run: paired comparisons.
    binary = lambda images: np.asarray(
        train_lib.pixel_targets(jax.random.key(0), images, config.binarise))
    images = splits.unlabelled_images[:FLAGS.num_images or None]
    bounds = evaluation.unlabelled_bound(params, binary(images), jax.random.key(1))
    if FLAGS.validation_breakdown:
      validation_of[name] = (
          evaluation.unlabelled_bound(params, binary(splits.validation_images),
                                      jax.random.key(1)),
          evaluation.predict(params, splits.validation_images) == splits.validation_labels)
    group = f"{config.dataset}-labels{config.labels}-labelseed{config.labelled_subset_seed}"
    rows[name] = {"workdir": workdir, "group": group, "seed": config.seed,
                  "num_images": len(images), "mean_unlabelled_bound": float(bounds.mean()),
                  "standard_error": float(bounds.std() / np.sqrt(len(bounds))),
                  **_read_results(workdir, FLAGS.step)}
    groups[group].append(name)
    bounds_of[name] = bounds
    row = rows[name]
    print(f"{name} ({group}, seed {config.seed}): mean U {row['mean_unlabelled_bound']:.3f} "
          f"+- {row['standard_error']:.3f} nats over {len(images)} images; validation error "
          f"{row.get('validation_error')}, test error {row.get('test_error')}")
  chosen = {g: max(names, key=lambda n: rows[n]["mean_unlabelled_bound"])
            for g, names in groups.items()}
  for group, best in chosen.items():
    print(f"{group}: chosen by U: {best} (of {', '.join(groups[group])})")
    for name in groups[group]:   # the same images and noise: a paired difference
      gap = bounds_of[best] - bounds_of[name]
      rows[name]["u_below_chosen"] = float(gap.mean())
      rows[name]["u_below_chosen_standard_error"] = float(gap.std() / np.sqrt(len(gap)))
      if name != best:
        print(f"  {name}: U {gap.mean():.3f} +- {gap.std() / np.sqrt(len(gap)):.3f} nats below")
      if name != best and FLAGS.validation_breakdown:
        split = _breakdown(validation_of[best], validation_of[name])
        rows[name]["validation_breakdown"] = split
        print("    validation U(chosen) - U(this), by who is right: " + "; ".join(
            f"{k} {v['count']}: {v['mean_gap']:.3f} +- {v['standard_error']:.3f}"
            for k, v in split.items() if v["count"] > 1))
  if FLAGS.output:
    checkpointing.write_json_atomically(FLAGS.output, {"runs": rows, "chosen": chosen})


if __name__ == "__main__":
  app.run(main)
