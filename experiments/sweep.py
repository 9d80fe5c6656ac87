r"""A sweep over label counts and seeds, in the layout of Kingma et al. 2014's table.

  python -m experiments.sweep --labels=100,600,1000,3000 --seeds=0,1,2,3,4 \
      --data_dir=../shared/data/mnist [any flag of experiments.mnist_semisup]

Every (label count, seed) is the run `python -m experiments.mnist_semisup` would make
with the same flags, in the same default workdir, so the two share their work: a run
whose results.json says it finished is skipped, an interrupted one resumes from its
checkpoints. The seeds of one label count train together in one compiled program
(vmapped over seeds, `--seeds_per_program` at a time), data-parallel over every
device. Writes sweep.json (per label count: mean and standard deviation of the test
error over seeds, and every run) and sweep.md (the table) into --sweep_dir.
"""

import dataclasses
import hashlib
import json
import logging
import os
import statistics
import sys

from absl import app, flags

from experiments import common
from ievae_jax import checkpointing, config as config_lib, data, train_lib

common.define_flags(common.SEMISUP_DEFAULTS)
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of every label count.")
flags.DEFINE_integer("seeds_per_program", 0, "Seeds vmapped into one program (0: all seeds of "
                     "a label count, or one at a time on a CPU when a network is convolutional).")
flags.DEFINE_string("sweep_dir", None, "Where sweep.json and sweep.md go; default "
                    "runs/sweep-<dataset>-<hash of the settings>.")
FLAGS = flags.FLAGS

log = logging.getLogger("ievae_jax")

# Kingma et al. 2014, Table 1 (MNIST test error %, mean and standard deviation).
PUBLISHED = {"M2": {100: (11.97, 1.71), 600: (4.94, 0.13), 1000: (3.60, 0.56), 3000: (3.92, 0.63)},
             "M1+M2": {100: (3.33, 0.14), 600: (2.59, 0.05), 1000: (2.40, 0.02),
                       3000: (2.18, 0.04)}}


def _parse(values, name):
  try:
    out = [int(v) for v in values]
  except ValueError:
    raise config_lib.ConfigError(f"--{name} must be a comma-separated list of integers, "
                                 f"got {','.join(values)!r}.") from None
  if not out or len(set(out)) != len(out):
    raise config_lib.ConfigError(f"--{name} must list distinct integers, got {values}.")
  return out


def summarise(runs_by_labels: dict) -> dict:
  rows = {}
  for labels, runs in runs_by_labels.items():
    errors = [r["test_error"] for r in runs]
    rows[str(labels)] = {
        "test_error_mean": statistics.mean(errors),
        "test_error_std": statistics.stdev(errors) if len(errors) > 1 else None,
        "seeds": [r["seed"] for r in runs],
        "runs": [{k: r.get(k) for k in ("seed", "test_error", "validation_error", "steps",
                                        "wall_seconds", "workdir")} for r in runs]}
  return rows


def table(rows: dict) -> str:
  lines = ["| labels | ievae_jax (this sweep) | M2 (Kingma et al. 2014) | M1+M2 |",
           "|---|---|---|---|"]
  for labels, row in rows.items():
    std = row["test_error_std"]
    ours = f"{100 * row['test_error_mean']:.2f}" + (
        f" (± {100 * std:.2f})" if std is not None else "") + f", {len(row['seeds'])} seeds"
    published = [f"{m:.2f} (± {s:.2f})" if (m, s) != (None, None) else "-" for m, s in (
        PUBLISHED[name].get(int(labels), (None, None)) for name in ("M2", "M1+M2"))]
    lines.append(f"| {labels} | {ours} | " + " | ".join(published) + " |")
  return "\n".join(lines)


def run_sweep() -> dict:
  common.initialize_distributed()
  if FLAGS.workdir:
    raise config_lib.ConfigError("--workdir does not apply to a sweep: every run goes to the "
                                 "default workdir of its settings; use --sweep_dir for the table.")
  label_counts = _parse(FLAGS.labels.split(","), "labels")
  seeds = _parse(FLAGS.seeds, "seeds")
  if FLAGS.seeds_per_program < 0:
    raise config_lib.ConfigError(f"--seeds_per_program must be >= 0, got "
                                 f"{FLAGS.seeds_per_program}.")
  configs = [common.config_from_flags(supervised=False, labels=n) for n in label_counts]
  base = configs[0]
  arrays = data.load(base.dataset, base.data_dir, base.tfds_data_dir)
  per_program = FLAGS.seeds_per_program or common.default_seeds_per_program(base, len(seeds))
  runs_by_labels = {}
  for config in configs:
    workdirs = {s: common.default_workdir("semisup", dataclasses.replace(config, seed=s))
                for s in seeds}
    done = {}
    for s, workdir in workdirs.items():
      results = common.finished_results(workdir, config.num_steps)
      if results is not None:
        log.info("labels %d, seed %d: finished in %s; skipped.", config.labels, s, workdir)
        done[s] = results
    todo = [s for s in seeds if s not in done]
    for i in range(0, len(todo), per_program):
      group = {s: workdirs[s] for s in todo[i:i + per_program]}
      for directory in group.values():
        common.check_workdir_writable(directory)
      done.update(train_lib.train_seeds(config, group, arrays))
    runs_by_labels[config.labels] = [{**done[s], "workdir": workdirs[s]} for s in seeds]
  rows = summarise(runs_by_labels)
  settings = {k: v for k, v in base.to_dict().items()
              if k not in ("labels", "seed") + checkpointing.RESUMABLE_SETTINGS}
  digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
  sweep_dir = FLAGS.sweep_dir or os.path.join("runs", f"sweep-{base.dataset}-{digest}")
  os.makedirs(sweep_dir, exist_ok=True)
  summary = {"dataset": base.dataset, "labels": label_counts, "seeds": seeds,
             "settings": settings, "num_steps": base.num_steps, "results": rows,
             "command": "python -m experiments.sweep " + " ".join(sys.argv[1:])}
  checkpointing.write_json_atomically(os.path.join(sweep_dir, "sweep.json"), summary)
  markdown = table(rows)
  with open(os.path.join(sweep_dir, "sweep.md"), "w") as f:
    f.write(f"MNIST test error (%), mean (± standard deviation) over seeds.\n\n{markdown}\n\n"
            f"Made by `{summary['command']}`.\n")
  print(markdown)
  print(f"written to {sweep_dir}/sweep.json and sweep.md")
  return summary


def main(argv):
  del argv
  common.main_guard(run_sweep)


if __name__ == "__main__":
  app.run(main)
