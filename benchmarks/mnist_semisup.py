r"""Semi-supervised MNIST accuracy over seeds, with the supervised error beside it.

Runs `experiments.mnist_semisup` once per seed (skipping finished runs and
resuming interrupted ones: each seed has a fixed workdir) and
`experiments.mnist_supervised` once, then prints a table and writes
benchmarks/results/mnist_semisup_labels<labels>.json.

  python -m benchmarks.mnist_semisup --labels=100 --seeds=0,1,2 \
      --data_dir=../shared/data/mnist --parallel=2 -- --lr_schedule=cosine

Arguments after `--` go to both launchers unchanged. `--reuse` takes the per-seed
results of seeds already reported in earlier outputs of this benchmark (their workdirs
may be gone) instead of training them again, after checking that those outputs ran the
same setting.
"""

import json
import os
import statistics
import signal
import subprocess
import sys
import threading
from concurrent import futures

from absl import app, flags

from benchmarks import machine
from experiments import common
from ievae_jax import checkpointing
from ievae_jax import config as config_lib

flags.DEFINE_integer("labels", 100, "Labelled examples.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run.")
flags.DEFINE_string("data_dir", None, "IDX directory passed to the launchers.")
flags.DEFINE_string("root", "runs/bench", "Where the run directories live.")
flags.DEFINE_string("tag", "default", "Name of this setting, part of each workdir's name.")
flags.DEFINE_integer("parallel", 1, "Runs at a time (also on one GPU: see "
                     "common.child_environment).")
flags.DEFINE_integer("supervised_steps", 10000, "Steps of the supervised run (0: skip it).")
flags.DEFINE_string("output", None, "JSON path (default benchmarks/results/...).")
flags.DEFINE_list("reuse", [], "Earlier outputs of this benchmark whose per-seed results "
                  "stand for those seeds instead of training them again.")
FLAGS = flags.FLAGS


def _command(launcher, args):
  return [sys.executable, "-m", f"experiments.{launcher}", *args]


class _Launcher:
  """Starts the training subprocesses and passes a SIGTERM or SIGINT sent to this wrapper
  on to them, so each saves its checkpoint and exits (as the launcher does when signalled
  itself) instead of training on, orphaned; runs not started yet are not started. The
  same command then resumes them all."""

  def __init__(self, environ: dict):
    self._environ = environ
    self._lock = threading.Lock()
    self._children = []
    self.stopped_by = None

  def stop(self, signum, frame=None):  # pylint: disable=unused-argument
    with self._lock:
      self.stopped_by = signum
      for child in self._children:
        if child.poll() is None:
          child.send_signal(signum)

  def launch(self, command, workdir):
    """Runs `command` (a launcher taking --workdir) into workdir, logging to workdir.log,
    unless workdir already holds a finished run; returns its results.json, or None once
    stop() has been called (main then reports the stop instead of any results)."""
    results = common.finished_results(workdir)
    if results is not None:
      return results
    with self._lock:   # so that stop() sees every child started before it
      if self.stopped_by is not None:
        return None
      os.makedirs(workdir, exist_ok=True)
      log = open(workdir + ".log", "a")  # pylint: disable=consider-using-with
      child = subprocess.Popen([*command, f"--workdir={workdir}"], stdout=log,
                               stderr=subprocess.STDOUT, env=self._environ)
      self._children.append(child)
    with log:
      returncode = child.wait()
    if self.stopped_by is not None:
      return None
    if returncode != 0:
      raise RuntimeError(f"{' '.join(command)} exited with code {returncode}; its log is "
                         f"{workdir}.log.")
    with open(os.path.join(workdir, "results.json")) as f:
      return json.load(f)


# Settings that may differ between reused and fresh seeds: the seed itself, and what
# checkpointing.RESUMABLE_SETTINGS lets change on resume, except the length of the run.
_NOT_A_SETTING = ("seed",) + tuple(s for s in checkpointing.RESUMABLE_SETTINGS
                                   if s != "num_steps")


def _setting(flag_values: dict) -> dict:
  """The run's settings, with those added since it was written at their defaults."""
  flag_values = config_lib.TrainConfig.from_dict(flag_values).to_dict()
  return {k: v for k, v in flag_values.items() if k not in _NOT_A_SETTING}


def reused_results(paths, seeds):
  """seed -> a per-seed entry of an earlier output, with that output's "flags" and
  "dataset", for each of `seeds` that one of `paths` reports (the last path wins)."""
  reused = {}
  for path in paths:
    try:
      with open(path) as f:
        earlier = json.load(f)
      entries, earlier_flags = earlier["per_seed"], earlier["flags"]
    except (OSError, ValueError, KeyError) as e:
      raise config_lib.ConfigError(
          f"--reuse={path}: not an output of benchmarks.mnist_semisup ({e}); pass the "
          "JSON file that benchmark wrote.") from e
    for entry in entries:
      if str(entry["seed"]) in seeds:
        reused[str(entry["seed"])] = dict(entry, flags=earlier_flags, path=path,
                                          dataset=earlier["dataset"])
  return reused


def check_same_setting(results: dict) -> None:
  """Raises ConfigError if any two of `results` (name -> results.json or reused entry)
  trained different settings, apart from the seed and the bookkeeping flags."""
  (first_name, first), *rest = results.items()
  for name, other in rest:
    differing = [d.split(" ")[0] for d in checkpointing.mismatched_settings(
        _setting(first["flags"]), _setting(other["flags"]))]
    if differing:
      where = lambda n, r: f"{n} (from {r['path']})" if "path" in r else n
      raise config_lib.ConfigError(
          f"{where(first_name, first)} and {where(name, other)} differ in "
          f"{', '.join(differing)}; --reuse only outputs of this command's setting.")


def main(argv):
  common.main_guard(lambda: _main(argv))


def _main(argv):
  passthrough = list(argv[1:])
  data_args = [f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else []
  jobs = {}
  reused = reused_results(FLAGS.reuse, FLAGS.seeds)
  if reused:  # against each other now; against the seeds trained here once they finish
    check_same_setting({f"seed{s}": r for s, r in reused.items()})
  launcher = _Launcher(common.child_environment(FLAGS.parallel))
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, launcher.stop)
  with futures.ThreadPoolExecutor(FLAGS.parallel) as pool:
    for seed in FLAGS.seeds:
      if seed in reused:
        continue
      workdir = os.path.join(FLAGS.root, f"semisup{FLAGS.labels}-seed{seed}-{FLAGS.tag}")
      args = [f"--labels={FLAGS.labels}", f"--seed={seed}", *data_args, *passthrough]
      jobs[f"seed{seed}"] = pool.submit(launcher.launch, _command("mnist_semisup", args), workdir)
    if FLAGS.supervised_steps:
      workdir = os.path.join(FLAGS.root, f"supervised-seed0-{FLAGS.tag}")
      args = ["--seed=0", f"--num_steps={FLAGS.supervised_steps}", *data_args, *passthrough]
      jobs["supervised"] = pool.submit(launcher.launch, _command("mnist_supervised", args),
                                       workdir)
  if launcher.stopped_by is not None:
    print(f"Stopped by {signal.Signals(launcher.stopped_by).name}, which was passed on to the "
          f"runs in progress: each saves its checkpoint and exits (see its .log in "
          f"{FLAGS.root}). Rerun the same command to resume them.", file=sys.stderr)
    sys.exit(128 + launcher.stopped_by)
  runs = {f"seed{s}": reused[s] if s in reused else jobs[f"seed{s}"].result()
          for s in FLAGS.seeds}
  if "supervised" in jobs:
    runs["supervised"] = jobs["supervised"].result()
  seeds = [runs[f"seed{s}"] for s in FLAGS.seeds]
  check_same_setting({f"seed{s}": r for s, r in zip(FLAGS.seeds, seeds)})
  errors = [r["test_error"] for r in seeds]
  summary = {
      "dataset": seeds[0]["dataset"],
      "labels": FLAGS.labels,
      "test_error": statistics.mean(errors),
      "test_error_std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
      # The mean teacher's errors (--teacher_decay) ride along where a run has one.
      "per_seed": [{k: r[k] for k in ("seed", "test_error", "validation_error", "steps",
                                      "wall_seconds", "teacher_test_error",
                                      "teacher_validation_error") if k in r} for r in seeds],
      "steps": seeds[0]["steps"],
      "wall_seconds_per_seed": [r["wall_seconds"] for r in seeds],
      "flags": seeds[0]["flags"],
      "command": "python -m benchmarks.mnist_semisup " + " ".join(sys.argv[1:]),
      **machine.describe(),
      "note": (f"Wall seconds of each run as trained. This benchmark ran {FLAGS.parallel} "
               "run(s) at a time; jobs started outside it on the same CPU are not "
               "counted here (the README says what shared the machine)."
               + "".join(f" Seed {s} is reported as in {r['path']}, not trained again."
                         for s, r in reused.items())),
  }
  if "supervised" in runs:
    summary["supervised"] = {k: runs["supervised"][k] for k in
                             ("test_error", "validation_error", "labels", "steps",
                              "wall_seconds")}
  output = FLAGS.output or os.path.join("benchmarks", "results",
                                        f"mnist_semisup_labels{FLAGS.labels}.json")
  os.makedirs(os.path.dirname(output), exist_ok=True)
  checkpointing.write_json_atomically(output, summary)
  print(f"{'run':<12}{'test error':>12}{'validation':>12}{'steps':>8}{'wall s':>9}")
  for name, r in runs.items():
    print(f"{name:<12}{r['test_error']:>12.4f}{r['validation_error']:>12.4f}{r['steps']:>8}"
          f"{r['wall_seconds']:>9.0f}")
  print(f"mean test error over {len(errors)} seeds: {summary['test_error']:.4f} "
        f"(std {summary['test_error_std']:.4f}); written to {output}")


if __name__ == "__main__":
  app.run(main)
