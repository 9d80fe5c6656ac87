r"""Validation error by step for runs compared side by side (settings selection).

Reads <workdir>/metrics.jsonl of each run, prints a Markdown table and writes JSON.
A run with a mean teacher (--teacher_decay) gets the teacher's curve too, as
"teacher_validation_error" and a column "<name> teacher".

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


def validation_curve(workdir, key="validation_error"):
  """{step: error} from a run directory's metrics.jsonl: the model's validation error,
  or the mean teacher's with key="teacher_validation_error" ({} if it has none)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    raise app.UsageError(f"{workdir!r} has no metrics.jsonl: give the workdir of a run of "
                         "experiments.mnist_semisup (it writes metrics.jsonl as it trains).")
  curve = {}
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      if key in record:
        curve[record["step"]] = record[key]
  return curve


def main(argv):
  del argv
  curves = {}
  for pair in FLAGS.runs:
    name, workdir = name_and_workdir(pair)
    curves[name] = {"workdir": workdir, "validation_error": validation_curve(workdir)}
    teacher = validation_curve(workdir, "teacher_validation_error")
    if teacher:
      curves[name]["teacher_validation_error"] = teacher
  columns = {(name if key == "validation_error" else f"{name} teacher"): curve
             for name, c in curves.items() for key, curve in c.items() if key != "workdir"}
  steps = sorted({s for curve in columns.values() for s in curve})
  print("| step | " + " | ".join(columns) + " |")
  print("|---|" + "---|" * len(columns))
  for step in steps:
    cells = [f"{curve[step]:.4f}" if step in curve else "-" for curve in columns.values()]
    print(f"| {step} | " + " | ".join(cells) + " |")
  with open(FLAGS.output, "w") as f:
    json.dump(curves, f, indent=2)


if __name__ == "__main__":
  app.run(main)
