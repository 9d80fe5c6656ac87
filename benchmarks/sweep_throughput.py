r"""S seeds vmapped in one program against the same S seeds trained one after another.

  python -m benchmarks.sweep_throughput --seeds=4

Both sides take the same steps of the default semi-supervised IE-VAE step (100
labelled + 100 unlabelled images per seed and step): the vmapped side runs
`train_lib.make_train_step(..., vmap_seeds=True)` once per step for all S seeds, the
sequential side runs the plain step S times, once per seed. Timed windows alternate
between the two in one process; examples/s are medians over windows. Writes
benchmarks/results/sweep_throughput.json.
"""

import json
import os
import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import machine
from ievae_jax import config as config_lib, train_lib

FLAGS = flags.FLAGS
flags.DEFINE_integer("seeds", 4, "S, the number of seeds.")
flags.DEFINE_integer("steps_per_window", 10, "Steps per seed in one timed window.")
flags.DEFINE_integer("windows", 5, "Timed windows per side.")
flags.DEFINE_string("output", "benchmarks/results/sweep_throughput.json", "JSON path.")

BATCH = 100


def main(argv):
  del argv
  s = FLAGS.seeds
  config = config_lib.TrainConfig(lr_schedule="cosine", num_steps=10000)
  rng = np.random.default_rng(0)
  images = lambda *lead: jnp.asarray(rng.integers(0, 256, lead + (BATCH, 28, 28, 1), np.uint8))
  labelled = {"image": images(s), "label": jnp.asarray(rng.integers(0, 10, (s, BATCH)))}
  unlabelled = {"image": images(s)}
  per_seed = [({"image": labelled["image"][i], "label": labelled["label"][i]},
               {"image": unlabelled["image"][i]}) for i in range(s)]

  singles = [train_lib.create_train_state(jax.random.key(i), config) for i in range(s)]
  steps = [train_lib.make_train_step(config_lib.TrainConfig.from_dict(
      {**config.to_dict(), "seed": i}), 55.0) for i in range(s)]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs),
                         *[train_lib.create_train_state(jax.random.key(i), config)
                           for i in range(s)])
  keys = jnp.stack([jax.random.key(i) for i in range(s)])
  vmapped_step = train_lib.make_train_step(config, 55.0, vmap_seeds=True)
  holder = {"stacked": stacked, "singles": singles}

  t = time.perf_counter()
  holder["stacked"], m = vmapped_step(holder["stacked"], labelled, unlabelled, keys)
  jax.block_until_ready(m)
  vmapped_compile_s = time.perf_counter() - t
  t = time.perf_counter()
  for i in range(s):   # one compile per seed: each seed's key is a constant of its step
    holder["singles"][i], m = steps[i](holder["singles"][i], *per_seed[i])
  jax.block_until_ready(m)
  sequential_compile_s = time.perf_counter() - t

  def vmapped_window():
    state = holder.pop("stacked")
    t = time.perf_counter()
    for _ in range(FLAGS.steps_per_window):
      state, m = vmapped_step(state, labelled, unlabelled, keys)
    jax.block_until_ready((state, m))
    holder["stacked"] = state
    return s * FLAGS.steps_per_window * 2 * BATCH / (time.perf_counter() - t)

  def sequential_window():
    states = holder.pop("singles")
    t = time.perf_counter()
    for i in range(s):
      for _ in range(FLAGS.steps_per_window):
        states[i], m = steps[i](states[i], *per_seed[i])
    jax.block_until_ready((states, m))
    holder["singles"] = states
    return s * FLAGS.steps_per_window * 2 * BATCH / (time.perf_counter() - t)

  rates = {"vmapped": [], "sequential": []}
  for _ in range(FLAGS.windows):
    rates["vmapped"].append(vmapped_window())
    rates["sequential"].append(sequential_window())
  result = {
      "seeds": s,
      "vmapped_examples_per_s": statistics.median(rates["vmapped"]),
      "sequential_examples_per_s": statistics.median(rates["sequential"]),
      "window_examples_per_s": rates,
      "steps_per_window": FLAGS.steps_per_window,
      "vmapped_compile_s": vmapped_compile_s,
      "sequential_compile_s": sequential_compile_s,
      "platform": jax.devices()[0].platform, "num_devices": jax.device_count(),
      **machine.describe(),
      "command": "python -m benchmarks.sweep_throughput --seeds=%d" % s,
  }
  result["vmap_speedup"] = result["vmapped_examples_per_s"] / result["sequential_examples_per_s"]
  print(f"{s} seeds: vmapped {result['vmapped_examples_per_s']:.0f} examples/s, one after "
        f"another {result['sequential_examples_per_s']:.0f} examples/s, "
        f"ratio {result['vmap_speedup']:.2f}")
  os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
  with open(FLAGS.output, "w") as f:
    json.dump(result, f, indent=1)


if __name__ == "__main__":
  app.run(main)
