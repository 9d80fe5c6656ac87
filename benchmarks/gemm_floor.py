r"""How fast could the step be? Its matrix products alone, per framework, beside the step.

  python -m benchmarks.gemm_floor     # writes benchmarks/results/gemm_floor_<platform>.json

The semi-supervised MLP step (100 labelled + 100 unlabelled images, exact class sum)
is mostly matrix products. This lists every product of the forward and backward pass
with its shape (`step_gemms`, counted from the architecture, not from XLA) and times
them, and nothing else, in XLA (one jitted function) and in PyTorch (torch.mm, no
autograd). The sum is a floor for a step in that framework: the step cannot beat its
own products. Timed in alternating windows in one run, beside the full steps of
`benchmarks/throughput.py`, so that the ratios share the machine's load:
  - gemm_floor_ratio: XLA's floor / PyTorch's floor (how much of the step-speed gap
    is the matrix-product library alone);
  - step_over_floor: full step time / floor time, per framework (the overhead on top).
"""

import importlib.util
import statistics
import time

from absl import app, flags
import jax
import numpy as np

from benchmarks import machine
from benchmarks import throughput

FLAGS = flags.FLAGS
flags.DEFINE_string("gemm_output", None,
                    "JSON path; default benchmarks/results/gemm_floor_<platform>.json.")


def step_gemms(batch: int = 100, num_classes: int = 10, pixels: int = 784, hidden: int = 500,
               z_dim: int = 8):
  """(M, K, N) of every product A (M, K) @ B (K, N) in one training step.

  Forward rows: the classifier sees 2 * batch images; the encoder's image part runs once
  per image, its hidden layers and the decoder once per labelled image and once per
  (unlabelled image, class). The class parts (K rows, from r_y of any size) are left
  out: they are tiny, so the list is the same for the IE-VAE and M2 but for d_z.
  Backward: each dense layer y = x W costs dW = x^T dy, and dx = dy W^T unless x is the
  data (the first layers on images).
  """
  images = 2 * batch
  hypotheses = batch + batch * num_classes
  layers = [  # (rows, in, out, input is data)
      (images, pixels, hidden, True), (images, hidden, hidden, False),
      (images, hidden, num_classes, False),                            # classifier
      (images, pixels, hidden, True),                                  # encoder, image part
      (hypotheses, hidden, hidden, False), (hypotheses, hidden, 2 * z_dim, False),
      (hypotheses, z_dim, hidden, False),                              # decoder, z part
      (hypotheses, hidden, hidden, False), (hypotheses, hidden, pixels, False),
  ]
  gemms = []
  for rows, n_in, n_out, is_data in layers:
    gemms.append((rows, n_in, n_out))         # y = x W
    gemms.append((n_in, rows, n_out))         # dW = x^T dy
    if not is_data:
      gemms.append((rows, n_out, n_in))       # dx = dy W^T
  return gemms


def gemm_flops(gemms) -> float:
  return float(sum(2 * m * k * n for m, k, n in gemms))


def _operands(gemms, seed=0):
  rng = np.random.default_rng(seed)
  return [(rng.normal(size=(m, k)).astype(np.float32), rng.normal(size=(k, n)).astype(np.float32))
          for m, k, n in gemms]


def jax_floor(gemms):
  """window() -> seconds per step of XLA doing only the step's products."""
  operands = jax.device_put(_operands(gemms))
  products = jax.jit(lambda ops: [a @ b for a, b in ops])
  jax.block_until_ready(products(operands))

  def window():
    t = time.perf_counter()
    for _ in range(FLAGS.steps_per_window):
      out = products(operands)
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / FLAGS.steps_per_window

  return window


def torch_floor(gemms):
  """window() -> seconds per step of PyTorch doing only the step's products."""
  import torch  # pylint: disable=g-import-not-at-top
  operands = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in _operands(gemms)]

  def window():
    t = time.perf_counter()
    with torch.no_grad():
      for _ in range(FLAGS.steps_per_window):
        for a, b in operands:
          torch.mm(a, b)
    return (time.perf_counter() - t) / FLAGS.steps_per_window

  window()
  return window


def main(argv):
  del argv
  platform = jax.devices()[0].platform
  have_torch = importlib.util.find_spec("torch") is not None
  results = {"platform": platform, **machine.describe(), "jax_version": jax.__version__,
             "steps_per_window": FLAGS.steps_per_window, "windows": FLAGS.windows}
  for kind in FLAGS.models:
    gemms = step_gemms(batch=throughput.BATCH, z_dim=50 if kind == "m2" else 8)
    step_window, info = throughput.jax_step(kind)
    seconds_per_step = lambda w: (lambda: 2 * throughput.BATCH / w())
    contenders = {"jax_floor": jax_floor(gemms), "jax_step": seconds_per_step(step_window)}
    if have_torch:
      contenders["torch_floor"] = torch_floor(gemms)
      torch_window, _ = throughput.torch_step(kind, None)
      contenders["torch_step"] = seconds_per_step(torch_window)
    times = {name: [] for name in contenders}
    for _ in range(FLAGS.windows):
      for name, window in contenders.items():
        times[name].append(window())
    s = {name: statistics.median(t) for name, t in times.items()}
    row = {"gemms": len(gemms), "gemm_flops_per_step": gemm_flops(gemms),
           "xla_flops_per_step": info["flops_per_step"],
           "seconds_per_step": s, "window_seconds_per_step": times,
           "jax_floor_flops_per_s": gemm_flops(gemms) / s["jax_floor"],
           "jax_step_over_floor": s["jax_step"] / s["jax_floor"]}
    if have_torch:
      row["torch_floor_flops_per_s"] = gemm_flops(gemms) / s["torch_floor"]
      row["torch_step_over_floor"] = s["torch_step"] / s["torch_floor"]
      row["gemm_floor_ratio"] = s["torch_floor"] / s["jax_floor"]   # > 1: XLA's products faster
      row["step_ratio"] = s["torch_step"] / s["jax_step"]           # ours / PyTorch, examples/s
    results[kind] = row
    print(f"{kind}: {len(gemms)} products, {gemm_flops(gemms) / 1e9:.2f} GFLOP/step "
          f"(XLA counts {info['flops_per_step'] / 1e9:.2f} for the whole step)")
    for name, sec in s.items():
      print(f"  {name:<12} {1e3 * sec:7.1f} ms/step")
    if have_torch:
      print(f"  products alone: XLA {row['jax_floor_flops_per_s'] / 1e9:.0f} GFLOP/s, PyTorch "
            f"{row['torch_floor_flops_per_s'] / 1e9:.0f} GFLOP/s; step / its products: ours "
            f"{row['jax_step_over_floor']:.2f}, PyTorch {row['torch_step_over_floor']:.2f}")
  throughput.write_results(
      results, FLAGS.gemm_output or f"benchmarks/results/gemm_floor_{platform}.json")


if __name__ == "__main__":
  app.run(main)
