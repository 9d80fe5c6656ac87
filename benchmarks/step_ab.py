r"""The training step of this checkout against the same step at another git commit, side by side.

  python -m benchmarks.step_ab --baseline=HEAD~1 --ab_classifier_arch=conv \
      --ab_output=benchmarks/results/step_ab.json

Both steps are compiled in one process and timed in alternating windows, so that load
on a shared machine hits both alike; the medians and their ratio are printed and
written as JSON. The baseline's `ievae_jax` is exported with `git archive` into a
temporary directory and imported under another name (`ievae_jax_baseline`), so nothing
in the working tree changes. The step is that of `benchmarks/throughput.py`: 100
labelled + 100 unlabelled random images (its `_batches`), exact class sum, alpha 55;
its --windows and --steps_per_window set the timing.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import app, flags
import jax.numpy as jnp

from benchmarks import throughput

FLAGS = flags.FLAGS
flags.DEFINE_string("baseline", "HEAD", "Git commit whose step is the baseline.")
flags.DEFINE_string("ab_model", "ievae", "ievae | m2.")
flags.DEFINE_string("ab_classifier_arch", "mlp", "mlp | conv.")
flags.DEFINE_string("ab_output", None, "JSON path (optional).")

ALIAS = "ievae_jax_baseline"


def export_baseline(commit: str, into: str) -> None:
  """Writes `commit`'s ievae_jax into `into`/ievae_jax_baseline, its imports renamed."""
  archive = subprocess.run(["git", "archive", commit, "ievae_jax"], check=True,
                           capture_output=True).stdout
  subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
  os.rename(os.path.join(into, "ievae_jax"), os.path.join(into, ALIAS))
  for root, _, files in os.walk(os.path.join(into, ALIAS)):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(root, name)
        with open(path) as f:
          source = f.read()
        with open(path, "w") as f:
          f.write(source.replace("ievae_jax", ALIAS))


def compiled_step(package: str, batches):
  """(compiled step, state) of `package`'s train_lib for the benchmark step."""
  config_lib = __import__(f"{package}.config", fromlist=["config"])
  train_lib = __import__(f"{package}.train_lib", fromlist=["train_lib"])
  model = config_lib.ModelConfig(kind=FLAGS.ab_model, z_dim=50 if FLAGS.ab_model == "m2" else 8,
                                 classifier_arch=FLAGS.ab_classifier_arch)
  config = config_lib.TrainConfig(model=model, lr_schedule="cosine", num_steps=10000)
  step, state, _ = throughput.warm_compiled_step(train_lib, config, 55.0, batches)
  return step, state


def main(argv):
  del argv
  x_l, y_l, x_u = (jnp.asarray(a) for a in throughput._batches())  # pylint: disable=protected-access
  batches = ({"image": x_l, "label": y_l}, {"image": x_u})
  with tempfile.TemporaryDirectory() as tmp:
    export_baseline(FLAGS.baseline, tmp)
    sys.path.insert(0, tmp)
    steps = {name: compiled_step(package, batches)
             for name, package in (("baseline", ALIAS), ("working_tree", "ievae_jax"))}
  times = throughput.time_steps_alternately(steps, batches, FLAGS.windows,
                                            FLAGS.steps_per_window)
  medians = {name: statistics.median(t) for name, t in times.items()}
  result = {"baseline": FLAGS.baseline, "model": FLAGS.ab_model,
            "classifier_arch": FLAGS.ab_classifier_arch,
            "ms_per_step": {name: 1e3 * m for name, m in medians.items()},
            "speed_up": medians["baseline"] / medians["working_tree"],
            "windows": FLAGS.windows, "steps_per_window": FLAGS.steps_per_window}
  print(f"{FLAGS.ab_model}, {FLAGS.ab_classifier_arch} classifier: baseline ({FLAGS.baseline}) "
        f"{result['ms_per_step']['baseline']:.1f} ms/step, working tree "
        f"{result['ms_per_step']['working_tree']:.1f} ms/step, speed-up {result['speed_up']:.3f}")
  if FLAGS.ab_output:
    with open(FLAGS.ab_output, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  app.run(main)
