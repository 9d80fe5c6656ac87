r"""Our training step against a minimal hand-written JAX step of the same model.

  python -m benchmarks.minimal_step --windows=7 --steps_per_window=15 \
      --minimal_output=benchmarks/results/minimal_step_cpu.json

What the toolkit's structure costs (flax modules, distrax distributions, the
non-finite guard, the metrics): the throughput benchmark's step (IE-VAE, MLP
784-500-500 everywhere, d_z = 8, d_r = 16, 100 labelled + 100 unlabelled images,
dynamic binarisation, exact class sum, alpha 55, Adam with cosine decay) beside the
same model and loss written as bare `jnp` matrix products over a dict of weights,
with no guard and the loss as its only metric. Both are compiled in one process and
timed in alternating windows (`throughput.time_steps_alternately`). XLA's FLOP count
of each program is printed beside the times, to show that the two do the same work,
and the CPU seconds per wall second of the timed windows: how many cores XLA kept busy.
"""

import os
import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import optax

from benchmarks import machine
from benchmarks import throughput
from ievae_jax import checkpointing, train_lib

flags.DEFINE_string("minimal_output", None, "JSON path (optional).")
FLAGS = flags.FLAGS

# The benchmarked step's sizes, read from its config so the two steps cannot drift apart.
_BENCHMARKED_MODEL = throughput.step_config("ievae").model
NUM_CLASSES, Z_DIM = _BENCHMARKED_MODEL.num_classes, _BENCHMARKED_MODEL.z_dim
ALPHA = 55.0


def weights_from_params(params) -> dict:
  """ievae_jax's MLP IE-VAE parameters (a `model.Params`) as a dict of weights keyed by
  layer: c* the classifier, g* the invariant embedding, e* the equivariant encoder, d*
  the decoder; e_r and d_r are the class parts of the first layers, without bias."""
  nets = params.nets
  dense = lambda layer: {"w": layer["kernel"], "b": layer["bias"]}
  first = lambda layer: ({"w": layer["from_first"]["kernel"], "b": layer["bias"]},
                         {"w": layer["from_second"]["kernel"]})
  e_x, e_r = first(nets["equivariant_encoder"]["encoder_input"])
  d_z, d_r = first(nets["decoder"]["decoder_input"])
  return {"c0": dense(nets["classifier"]["Dense_0"]), "c1": dense(nets["classifier"]["Dense_1"]),
          "c2": dense(nets["classifier"]["Dense_2"]),
          "g0": dense(nets["invariant_embedding"]["Dense_0"]),
          "g1": dense(nets["invariant_embedding"]["Dense_1"]),
          "e_x": e_x, "e_r": e_r, "e1": dense(nets["equivariant_encoder"]["Dense_0"]),
          "e2": dense(nets["equivariant_encoder"]["GaussianHead_0"]["mean_and_scale"]),
          "d_z": d_z, "d_r": d_r, "d1": dense(nets["decoder"]["Dense_0"]),
          "d2": dense(nets["decoder"]["Dense_1"])}


def _linear(layer, x):
  return x @ layer["w"] + layer["b"]


def _mlp_tail(w, name1, name2, h):
  return _linear(w[name2], jax.nn.relu(_linear(w[name1], jax.nn.relu(h))))


def _elbo(w, x, r, eps):
  """L(x, y) for x (B, D) with r (B, d_r), or x (B, 1, D) with r (K, d_r) -> (B[, K])."""
  out = _mlp_tail(w, "e1", "e2", x @ w["e_x"]["w"] + r @ w["e_r"]["w"] + w["e_x"]["b"])
  mean, scale = out[..., :Z_DIM], jax.nn.softplus(out[..., Z_DIM:]) + 1e-4
  z = mean + scale * eps
  logits = _mlp_tail(w, "d1", "d2", z @ w["d_z"]["w"] + r @ w["d_r"]["w"] + w["d_z"]["b"])
  reconstruction = jnp.sum(x * logits, -1) - jnp.sum(jax.nn.softplus(logits), -1)
  kl = 0.5 * jnp.sum(mean ** 2 + scale ** 2 - 1.0 - 2.0 * jnp.log(scale), -1)
  return reconstruction - kl - jnp.log(NUM_CLASSES)


def loss(w, x_l, y_l, x_u, key):
  """J of objective.py, on flat binary images x_l, x_u (B, D) and labels y_l (B,)."""
  key_l, key_u = jax.random.split(key)
  classify = lambda x: _mlp_tail(w, "c1", "c2", _linear(w["c0"], x))
  r_all = _linear(w["g1"], jax.nn.relu(_linear(w["g0"], jnp.eye(NUM_CLASSES))))  # (K, d_r)
  elbo_l = _elbo(w, x_l, r_all[y_l], jax.random.normal(key_l, (x_l.shape[0], Z_DIM)))
  log_q_l = jax.nn.log_softmax(classify(x_l))
  cross_entropy = -jnp.take_along_axis(log_q_l, y_l[:, None], 1)[:, 0]
  elbo_u = _elbo(w, x_u[:, None], r_all,
                 jax.random.normal(key_u, (x_u.shape[0], NUM_CLASSES, Z_DIM)))
  log_q_u = jax.nn.log_softmax(classify(x_u))
  bound_u = jnp.sum(jnp.exp(log_q_u) * (elbo_u - log_q_u), -1)
  return -jnp.mean(elbo_l) + ALPHA * jnp.mean(cross_entropy) - jnp.mean(bound_u)


def make_minimal_step(optimizer):
  def step(state, x_l, y_l, x_u):
    weights, opt_state, t = state
    key_l, key_u, key_z = jax.random.split(jax.random.fold_in(jax.random.key(0), t), 3)
    binary = lambda k, x: jax.random.bernoulli(k, x.reshape(x.shape[0], -1) / 255.0).astype(
        jnp.float32)
    value, grads = jax.value_and_grad(loss)(weights, binary(key_l, x_l), y_l,
                                            binary(key_u, x_u), key_z)
    updates, opt_state = optimizer.update(grads, opt_state, weights)
    return (optax.apply_updates(weights, updates), opt_state, t + 1), {"loss": value}
  return jax.jit(step, donate_argnums=0)


def main(argv):
  del argv
  x_l, y_l, x_u = (jnp.asarray(a) for a in throughput._batches())  # pylint: disable=protected-access
  config = throughput.step_config("ievae")
  batches = ({"image": x_l, "label": y_l}, {"image": x_u})
  ours, ours_state, _ = throughput.warm_compiled_step(train_lib, config, ALPHA, batches)

  # The same starting weights, copied: our step donates its state's buffers.
  weights = jax.tree.map(jnp.copy, weights_from_params(ours_state.params))
  optimizer = train_lib.make_optimizer(config)
  minimal_state = (weights, optimizer.init(weights), jnp.zeros((), jnp.int32))
  minimal = make_minimal_step(optimizer).lower(minimal_state, x_l, y_l, x_u).compile()
  for _ in range(3):
    minimal_state, metrics = minimal(minimal_state, x_l, y_l, x_u)
  jax.block_until_ready(metrics)
  # The alternating timer calls step(state, *batches): give the minimal step that form.
  minimal_batches = lambda state, labelled, unlabelled: minimal(
      state, labelled["image"], labelled["label"], unlabelled["image"])

  wall, cpu = time.perf_counter(), time.process_time()
  times = throughput.time_steps_alternately(
      {"ours": (ours, ours_state), "minimal": (minimal_batches, minimal_state)}, batches,
      FLAGS.windows, FLAGS.steps_per_window)
  # How many cores the timed windows kept busy on average (of os.cpu_count()).
  cores_busy = (time.process_time() - cpu) / (time.perf_counter() - wall)
  medians = {name: statistics.median(t) for name, t in times.items()}
  count = lambda tree: sum(a.size for a in jax.tree.leaves(tree))
  result = {
      "ms_per_step": {name: 1e3 * m for name, m in medians.items()},
      "window_ms_per_step": {name: [1e3 * s for s in t] for name, t in times.items()},
      "ours_over_minimal": medians["ours"] / medians["minimal"],
      "xla_flops_per_step": {"ours": throughput.compiled_flops(ours),
                             "minimal": throughput.compiled_flops(minimal)},
      "parameters": {"ours": count(ours_state.params), "minimal": count(weights)},
      "cores_busy": cores_busy, **machine.describe(),
      "windows": FLAGS.windows, "steps_per_window": FLAGS.steps_per_window,
  }
  print(f"ours {result['ms_per_step']['ours']:.1f} ms, minimal "
        f"{result['ms_per_step']['minimal']:.1f} ms per step: ours takes "
        f"{result['ours_over_minimal']:.3f} times as long; XLA GFLOP per step "
        f"{result['xla_flops_per_step']['ours'] / 1e9:.2f} and "
        f"{result['xla_flops_per_step']['minimal'] / 1e9:.2f}; parameters "
        f"{result['parameters']['ours']:,} and {result['parameters']['minimal']:,}; "
        f"{cores_busy:.2f} of {os.cpu_count()} cores busy while timing")
  if FLAGS.minimal_output:
    checkpointing.write_json_atomically(FLAGS.minimal_output, result)


if __name__ == "__main__":
  app.run(main)
