r"""Collects the eval.json of trained runs into one comparison table.

  python -m benchmarks.representation_comparison \
      --runs=ievae=RUN_A,m2=RUN_B,vae=RUN_C,ievae_strict=RUN_D

Each RUN must have been measured by `python -m experiments.evaluate --workdir=RUN`.
Writes benchmarks/results/representation_comparison.json (one object per name, the
eval.json keys plus the run's training settings) and prints a Markdown table.
"""

import json
import os

from absl import app, flags

from benchmarks.finished_runs import name_and_workdir

FLAGS = flags.FLAGS
flags.DEFINE_string("runs", None, "Comma-separated name=workdir pairs.")
flags.DEFINE_string("output", "benchmarks/results/representation_comparison.json", "JSON path.")

COLUMNS = (("test_error", "test error", "{:.2%}"),
           ("z_probe_accuracy", "z-probe accuracy", "{:.3f}"),
           ("r_within_class_variance_share", "r within-class variance share", "{:.4f}"),
           ("transfer_accuracy", "transfer accuracy", "{:.3f}"),
           ("iw_log_likelihood", "test log p(x) bound (nats)", "{:.2f}"))


def table(rows: dict) -> str:
  lines = ["| model | " + " | ".join(c[1] for c in COLUMNS) + " |",
           "|---" * (len(COLUMNS) + 1) + "|"]
  for name, r in rows.items():
    cells = [fmt.format(r[key]) if r.get(key) is not None else "-" for key, _, fmt in COLUMNS]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv):
  del argv
  rows = {}
  for pair in FLAGS.runs.split(","):
    name, workdir = name_and_workdir(pair)
    with open(os.path.join(workdir, "eval.json")) as f:
      row = json.load(f)
    with open(os.path.join(workdir, "results.json")) as f:
      trained = json.load(f)
    row["training"] = {k: trained.get(k) for k in ("steps", "wall_seconds", "alpha", "flags")}
    rows[name] = row
  os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
  with open(FLAGS.output, "w") as f:
    json.dump(rows, f, indent=1)
  print(table(rows))
  print(f"written to {FLAGS.output}")


if __name__ == "__main__":
  flags.mark_flag_as_required("runs")
  app.run(main)
