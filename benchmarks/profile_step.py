r"""Where a training step's time goes: the XLA ops that take the most of it.

  python -m benchmarks.profile_step --variant=arch_conv --profile_steps=2 \
      --profile_output=benchmarks/results/profile_step_arch_conv_cpu.json

Compiles the step of `mnist_semisup`'s defaults, or of one `benchmarks.option_cost`
variant, on the throughput benchmark's batch (100 labelled + 100 unlabelled random
images), warms it up, traces --profile_steps steps with `jax.profiler`, and lists the
ops (XLA fusions, convolutions, dots) with the largest summed duration per step, each
with its output shape and the JAX operation it came from. The shares are of the summed
op time: on the CPU the thunk runtime may run independent ops at once, so the sum can
exceed the wall time, and a shared machine stretches every op; the ranking is the point.
"""

import collections
import glob
import gzip
import json
import os
import re
import tempfile

from absl import app, flags
import jax
import jax.numpy as jnp

from benchmarks import option_cost, throughput
from ievae_jax import checkpointing, train_lib

flags.DEFINE_string("variant", "defaults", "'defaults' or a benchmarks.option_cost variant name.")
flags.DEFINE_integer("profile_steps", 2, "Steps traced.")
flags.DEFINE_integer("top", 15, "Ops listed.")
flags.DEFINE_string("profile_output", None, "JSON path (optional).")
FLAGS = flags.FLAGS

# Runtime bookkeeping, not ops of the program.
_NOT_OPS = ("ThunkExecutor", "SlinkyThreadPool", "$", "Pjit", "CommonPjRt", "ParseArguments")


def op_durations(trace_file: str) -> collections.Counter:
  """Summed microseconds per op name in a perfetto trace written by jax.profiler."""
  with gzip.open(trace_file) as f:
    events = json.load(f)["traceEvents"]
  durations = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and not event["name"].startswith(_NOT_OPS):
      durations[event["name"]] += event.get("dur", 0)
  return durations


def describe(op: str, hlo_text: str) -> dict:
  """Output shape and originating JAX operation of `op` in the compiled HLO text."""
  match = re.search(r"^\s*%" + re.escape(op) + r" = (\S+) .*?op_name=\"([^\"]*)\"",
                    hlo_text, re.M)
  return {"shape": match.group(1), "jax_op": match.group(2)} if match else {}


def main(argv):
  del argv
  config = (option_cost.launcher_defaults() if FLAGS.variant == "defaults"
            else option_cost.variant_config(FLAGS.variant))
  x_l, y_l, x_u = (jnp.asarray(a) for a in throughput._batches())  # pylint: disable=protected-access
  batches = ({"image": x_l, "label": y_l}, {"image": x_u})
  step, state, _ = throughput.warm_compiled_step(train_lib, config, 550.0, batches)
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp, create_perfetto_trace=True)
    for _ in range(FLAGS.profile_steps):
      state, metrics = step(state, *batches)
    jax.block_until_ready((state, metrics))
    jax.profiler.stop_trace()
    trace_file, = glob.glob(os.path.join(tmp, "plugins", "profile", "*", "perfetto_trace.json.gz"))
    durations = op_durations(trace_file)
  total = sum(durations.values())
  hlo_text = step.as_text()
  ops = [{"op": name, "ms_per_step": 1e-3 * us / FLAGS.profile_steps, "share": us / total,
          **describe(name, hlo_text)} for name, us in durations.most_common(FLAGS.top)]
  result = {"variant": FLAGS.variant, "platform": jax.devices()[0].platform,
            "profile_steps": FLAGS.profile_steps,
            "summed_op_ms_per_step": 1e-3 * total / FLAGS.profile_steps, "top_ops": ops}
  print(f"{FLAGS.variant}: {result['summed_op_ms_per_step']:.1f} ms of op time per step")
  for op in ops:
    print(f"{op['ms_per_step']:9.1f} ms {op['share']:6.1%}  {op['op']}  {op.get('shape', '')}  "
          f"{op.get('jax_op', '')[-80:]}")
  if FLAGS.profile_output:
    checkpointing.write_json_atomically(FLAGS.profile_output, result)


if __name__ == "__main__":
  app.run(main)
