r"""Validation error by step for runs compared side by side (settings selection).

Reads <workdir>/metrics.jsonl of each run, prints a Markdown table and writes JSON.

  python -m benchmarks.validation_curves --runs=constant=runs/bench/semisup100-seed0-constant,cosine=runs/bench/semisup100-seed0-cosine \
      --output=benchmarks/results/lr_schedule_validation.json
"""

import json
import os

from absl import app, flags

from benchmarks.finished_runs import name_and_workdir

flags.DEFINE_list("runs", None, "name=workdir pairs.", required=True)
flags.DEFINE_string("output", None, "JSON path.", required=True)
FLAGS = flags.FLAGS


def validation_curve(workdir):
  """{step: validation error} from a run directory's metrics.jsonl."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    raise app.UsageError(f"{workdir!r} has no metrics.jsonl: give the workdir of a run of "
                         "experiments.mnist_semisup (it writes metrics.jsonl as it trains).")
  curve = {}
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      if "validation_error" in record:
        curve[record["step"]] = record["validation_error"]
  return curve


def main(argv):
  del argv
  curves = {}
  for pair in FLAGS.runs:
    name, workdir = name_and_workdir(pair)
    curves[name] = {"workdir": workdir, "validation_error": validation_curve(workdir)}
  steps = sorted({s for c in curves.values() for s in c["validation_error"]})
  print("| step | " + " | ".join(curves) + " |")
  print("|---|" + "---|" * len(curves))
  for step in steps:
    cells = [f"{c['validation_error'][step]:.4f}" if step in c["validation_error"] else "-"
             for c in curves.values()]
    print(f"| {step} | " + " | ".join(cells) + " |")
  with open(FLAGS.output, "w") as f:
    json.dump(curves, f, indent=2)


if __name__ == "__main__":
  app.run(main)
