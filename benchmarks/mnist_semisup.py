r"""Semi-supervised MNIST accuracy over seeds, with the supervised error beside it.

Runs `experiments.mnist_semisup` once per seed (skipping finished runs and
resuming interrupted ones: each seed has a fixed workdir) and
`experiments.mnist_supervised` once, then prints a table and writes
benchmarks/results/mnist_semisup_labels<labels>.json.

  python -m benchmarks.mnist_semisup --labels=100 --seeds=0,1,2 \
      --data_dir=../shared/data/mnist --parallel=2 -- --lr_schedule=cosine

Arguments after `--` go to both launchers unchanged.
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

from experiments import common
from ievae_jax import checkpointing

flags.DEFINE_integer("labels", 100, "Labelled examples.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run.")
flags.DEFINE_string("data_dir", None, "IDX directory passed to the launchers.")
flags.DEFINE_string("root", "runs/bench", "Where the run directories live.")
flags.DEFINE_string("tag", "default", "Name of this setting, part of each workdir's name.")
flags.DEFINE_integer("parallel", 1, "Runs at a time.")
flags.DEFINE_integer("supervised_steps", 10000, "Steps of the supervised run (0: skip it).")
flags.DEFINE_string("output", None, "JSON path (default benchmarks/results/...).")
FLAGS = flags.FLAGS


def _command(launcher, args):
  return [sys.executable, "-m", f"experiments.{launcher}", *args]


class _Launcher:
  """Starts the training subprocesses and passes a SIGTERM or SIGINT sent to this wrapper
  on to them, so each saves its checkpoint and exits (as the launcher does when signalled
  itself) instead of training on, orphaned; runs not started yet are not started. The
  same command then resumes them all."""

  def __init__(self):
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
                               stderr=subprocess.STDOUT)
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


def main(argv):
  passthrough = list(argv[1:])
  data_args = [f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else []
  jobs = {}
  launcher = _Launcher()
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, launcher.stop)
  with futures.ThreadPoolExecutor(FLAGS.parallel) as pool:
    for seed in FLAGS.seeds:
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
  runs = {name: job.result() for name, job in jobs.items()}
  seeds = [runs[f"seed{s}"] for s in FLAGS.seeds]
  errors = [r["test_error"] for r in seeds]
  summary = {
      "dataset": seeds[0]["dataset"],
      "labels": FLAGS.labels,
      "test_error": statistics.mean(errors),
      "test_error_std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
      "per_seed": [{k: r[k] for k in ("seed", "test_error", "validation_error", "steps",
                                      "wall_seconds")} for r in seeds],
      "steps": seeds[0]["steps"],
      "wall_seconds_per_seed": [r["wall_seconds"] for r in seeds],
      "flags": seeds[0]["flags"],
      "command": "python -m benchmarks.mnist_semisup " + " ".join(sys.argv[1:]),
      "note": (f"Wall seconds of each run as trained. This benchmark ran {FLAGS.parallel} "
               "run(s) at a time; jobs started outside it on the same CPU are not "
               "counted here (the README says what shared the machine)."),
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
