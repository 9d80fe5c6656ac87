r"""Validation error by step for runs compared side by side (settings selection).

Reads <workdir>/metrics.jsonl of each run, prints a Markdown table and writes JSON.
A run with a mean teacher (--teacher_decay) gets the teacher's curve too, as
"teacher_validation_error" and a column "<name> teacher". --metrics adds logged training
metrics (e.g. class_balance, unlabelled_entropy) to the JSON as {step: value}, unprinted.

  python -m benchmarks.validation_curves --runs=constant=runs/bench/semisup100-seed0-constant,cosine=runs/bench/semisup100-seed0-cosine \
      --output=benchmarks/results/lr_schedule_validation.json
"""

import json
import os

from absl import app, flags

from benchmarks.finished_runs import name_and_workdir

flags.DEFINE_list("runs", None, "name=workdir pairs.", required=True)
flags.DEFINE_string("output", None, "JSON path.", required=True)
flags.DEFINE_list("metrics", [], "Logged training metrics to add to each run's JSON by "
                  "step, e.g. class_balance,unlabelled_entropy (keys of metrics.jsonl).")
FLAGS = flags.FLAGS


def read_metrics(workdir):
  """The records of a run directory's metrics.jsonl, in order."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    raise app.UsageError(f"{workdir!r} has no metrics.jsonl: give the workdir of a run of "
                         "experiments.mnist_semisup (it writes metrics.jsonl as it trains).")
  with open(path) as f:
    return [json.loads(line) for line in f]


def metric_curve(records, key="validation_error"):
  """{step: value} of one key of a run's records: the model's validation error, the
  mean teacher's with key="teacher_validation_error", or a logged training metric
  ({} if the run has none)."""
  return {record["step"]: record[key] for record in records if key in record}


def main(argv):
  del argv
  curves = {}
  for pair in FLAGS.runs:
    name, workdir = name_and_workdir(pair)
    records = read_metrics(workdir)
    curves[name] = {"workdir": workdir, "validation_error": metric_curve(records)}
    teacher = metric_curve(records, "teacher_validation_error")
    if teacher:
      curves[name]["teacher_validation_error"] = teacher
    for key in FLAGS.metrics:
      curves[name][key] = metric_curve(records, key)
      if not curves[name][key]:
        raise app.UsageError(f"{workdir!r} logged no {key!r}; --metrics takes keys of its "
                             "metrics.jsonl (the options that add a term log it).")
  printed = ("validation_error", "teacher_validation_error")
  columns = {(name if key == "validation_error" else f"{name} teacher"): curve
             for name, c in curves.items() for key, curve in c.items() if key in printed}
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
