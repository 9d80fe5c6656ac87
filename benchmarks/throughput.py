r"""Training-step throughput: ievae_jax against the same step in PyTorch and against the machine.

  python -m benchmarks.throughput            # writes benchmarks/results/throughput_<platform>.json

For the IE-VAE and M2 semi-supervised step (100 labelled + 100 unlabelled images,
MLP 784-500-500, exact class sum), in one process:
- examples/s of our jitted step after compilation: the median over timed windows;
- the same step in plain PyTorch (benchmarks/torch_reference.py), eager and with
  torch.compile, timed in windows that alternate with ours, so that load on a shared
  machine hits both alike (skipped, and said so, when torch is not installed);
- our FLOP/s (FLOPs per step from XLA's cost analysis of the compiled step) against
  the FLOP/s of a large float32 matrix product measured in the same run by XLA
  (`peak_fraction`), and of the same product through PyTorch for reference;
- compile time of our step, and its memory (XLA's memory analysis: arguments,
  outputs and temporaries of the compiled step).

With --matmul_dtypes including bfloat16 (the default), also our step with
`ModelConfig.matmul_dtype="bfloat16"` (rows `ievae_bfloat16`, `m2_bfloat16`), timed
against PyTorch eager in float32 and under `torch.autocast` with bfloat16, in
alternating windows; its `torch_ratio` divides by the faster of the two, and its
`peak_fraction` by a bfloat16 matrix product's rate (float32 accumulation) measured
in the same run.
On a CPU without AVX512-BF16 the bfloat16 rows are left out unless --matmul_dtypes
is given (`dtypes_for_this_machine`); the JSON then says why under
`bfloat16_skipped_because`.

On a GPU (JAX's platform "gpu"), PyTorch runs on CUDA too and its float32 products
use TensorFloat-32 (`torch.set_float32_matmul_precision("high")`), as XLA's do there
by default, so that both sides do the same arithmetic; the JSON records both settings.
"""

import importlib.util
import json
import os
import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import machine
from benchmarks.finished_runs import name_and_workdir
from ievae_jax import checkpointing, config as config_lib, train_lib

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["ievae", "m2"], "Models to time.")
flags.DEFINE_integer("windows", 7, "Timed windows per implementation (medians are reported).")
flags.DEFINE_integer("steps_per_window", 20, "Steps per timed window.")
flags.DEFINE_boolean("torch_compile", True, "Also time torch.compile (inductor), float32 only.")
flags.DEFINE_list("torch_compile_modes", ["default"], "torch.compile modes to time (on a GPU, "
                  "'reduce-overhead' adds CUDA graphs, the counterpart of one XLA executable).")
flags.DEFINE_list("matmul_dtypes", ["float32", "bfloat16"],
                  "Our step's ModelConfig.matmul_dtype values to time.")
flags.DEFINE_integer("matmul_size", 2048, "Side of the square matrix products (float32, "
                     "and bfloat16 when timed) that the peak fractions divide by.")
flags.DEFINE_list("time_to_error_runs", [], "name=workdir pairs of finished MNIST-100 runs whose "
                  "metrics.jsonl give the time to reach 5% and 3.33% error.")
flags.DEFINE_string("output", None, "JSON path; default benchmarks/results/throughput_<platform>.json.")
flags.DEFINE_boolean("time_to_error_only", False, "Time nothing: add the --time_to_error_runs "
                     "to the existing --output JSON (runs of the same name are replaced).")

BATCH = 100   # labelled and unlabelled images per step each


def _batches(seed=0):
  rng = np.random.default_rng(seed)
  images = lambda: rng.integers(0, 256, (BATCH, 28, 28, 1), dtype=np.uint8)
  return images(), rng.integers(0, 10, BATCH), images()


def warm_compiled_step(train_lib_module, config, alpha: float, batches):
  """(compiled step, state after 3 warm-up steps, compile seconds) for `config`.

  train_lib_module: `ievae_jax.train_lib`, or an older commit's copy (step_ab.py).
  """
  state = train_lib_module.create_train_state(jax.random.key(0), config)
  t = time.perf_counter()
  step = train_lib_module.make_train_step(config, alpha=alpha).lower(state, *batches).compile()
  compile_s = time.perf_counter() - t
  for _ in range(3):
    state, metrics = step(state, *batches)
  jax.block_until_ready(metrics)
  return step, state, compile_s


def time_steps_alternately(steps: dict, batches, windows: int, steps_per_window: int) -> dict:
  """Seconds per step of each compiled step, {name: [one per window]}.

  steps: {name: (compiled step, state)}; each window runs every step in turn, so that
  load on a shared machine hits them alike. The entries are updated with the latest
  states (the steps donate theirs).
  """
  times = {name: [] for name in steps}
  for _ in range(windows):
    for name, (step, state) in steps.items():
      start = time.perf_counter()
      for _ in range(steps_per_window):
        state, metrics = step(state, *batches)
      jax.block_until_ready((state, metrics))
      times[name].append((time.perf_counter() - start) / steps_per_window)
      steps[name] = (step, state)
  return times


def step_config(kind: str, matmul_dtype: str = "float32") -> config_lib.TrainConfig:
  """The benchmarked step's settings: MLP everywhere, d_z = 8 (M2: 50), cosine decay."""
  z_dim = 50 if kind == "m2" else 8
  model = config_lib.ModelConfig(kind=kind, z_dim=z_dim, matmul_dtype=matmul_dtype)
  return config_lib.TrainConfig(model=model, lr_schedule="cosine", num_steps=10000)


def compiled_flops(compiled) -> float:
  """XLA's FLOP count of one call of a compiled function."""
  cost = compiled.cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def jax_step(kind: str, matmul_dtype: str = "float32"):
  """(window() -> examples/s, info) for our compiled step."""
  config = step_config(kind, matmul_dtype)
  x_l, y_l, x_u = _batches()
  labelled = {"image": jnp.asarray(x_l), "label": jnp.asarray(y_l)}
  unlabelled = {"image": jnp.asarray(x_u)}
  compiled, state, compile_s = warm_compiled_step(train_lib, config, 55.0, (labelled, unlabelled))
  memory = compiled.memory_analysis()
  info = {"compile_s": compile_s, "flops_per_step": compiled_flops(compiled),
          "memory_bytes": {name: int(getattr(memory, f"{name}_size_in_bytes"))
                           for name in ("argument", "output", "temp")}}
  holder = {"state": state}

  def window():
    state = holder.pop("state")
    t = time.perf_counter()
    for _ in range(FLAGS.steps_per_window):
      state, metrics = compiled(state, labelled, unlabelled)
    jax.block_until_ready((state, metrics))
    holder["state"] = state
    return FLAGS.steps_per_window * 2 * BATCH / (time.perf_counter() - t)

  return window, info


def torch_device() -> str:
  """Where PyTorch runs: CUDA when our JAX step runs on a GPU, else the CPU."""
  import torch  # pylint: disable=g-import-not-at-top
  on_gpu = jax.devices()[0].platform == "gpu" and torch.cuda.is_available()
  return "cuda" if on_gpu else "cpu"


def torch_step(kind: str, compile_mode, bfloat16: bool = False):
  """(window() -> examples/s, info) for the PyTorch step (bfloat16: under autocast)."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  device = torch_device()
  step = torch_reference.make_step(kind, alpha=55.0, compile_mode=compile_mode,
                                   bfloat16=bfloat16, device=device)
  x_l, y_l, x_u = (torch.from_numpy(a.reshape(BATCH, -1) if a.ndim > 1 else a).to(device)
                   for a in _batches())
  t = time.perf_counter()
  for _ in range(3):   # torch.compile traces and compiles on the first calls
    step(x_l, y_l, x_u)
  warmup_s = time.perf_counter() - t

  def window():
    t = time.perf_counter()
    for _ in range(FLAGS.steps_per_window):
      loss = step(x_l, y_l, x_u)
    float(loss.detach())
    return FLAGS.steps_per_window * 2 * BATCH / (time.perf_counter() - t)

  return window, {"warmup_s": warmup_s, "threads": torch.get_num_threads(),
                  "version": torch.__version__, "device": device,
                  "float32_matmul_precision": torch.get_float32_matmul_precision()}


def check_torch_matches(kind: str) -> float:
  """Relative difference between our loss and the PyTorch reference's on the same
  weights and binary batch, latent noise 0: proof that both sides do the same work."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
  from ievae_jax import model  # pylint: disable=g-import-not-at-top
  cfg = config_lib.ModelConfig(kind=kind, z_dim=50 if kind == "m2" else 8)
  params = model.init(jax.random.key(1), cfg)
  x_l, y_l, x_u = _batches(1)
  binary = lambda a: (a > 127).astype(np.float32)
  zero_key_loss = _zero_noise_loss(params, binary(x_l), y_l, binary(x_u))
  reference = torch_reference.Model(kind, z_dim=cfg.z_dim)
  torch_reference.load_flax_params(reference, jax.tree.map(np.asarray, params.nets))
  theirs = torch_reference.loss_with_zero_noise(
      reference, torch.from_numpy(binary(x_l).reshape(BATCH, -1)), torch.from_numpy(y_l),
      torch.from_numpy(binary(x_u).reshape(BATCH, -1)), 55.0)
  return abs(theirs - zero_key_loss) / abs(zero_key_loss)


def _zero_noise_loss(params, x_l, y_l, x_u) -> float:
  """Our J with z at the posterior means (the noise eps = 0), from objective's terms."""
  from ievae_jax import distributions, model, objective  # pylint: disable=g-import-not-at-top
  cfg = params.config
  x_l, x_u = jnp.asarray(x_l), jnp.asarray(x_u)
  labelled = objective.labelled_elbo(params, x_l, jnp.asarray(y_l),
                                     jnp.zeros((BATCH, cfg.z_dim)))["elbo"]
  cross_entropy = -distributions.class_posterior(model.classify(params, x_l)).log_prob(
      jnp.asarray(y_l))
  bound = objective.unlabelled_bound(
      params, x_u, jnp.zeros(objective.latent_noise_shape(cfg, BATCH, False)))["bound"]
  return float(-labelled.mean() + 55.0 * cross_entropy.mean() - bound.mean())


def matmul_flops(n: int, dtype: str = "float32") -> dict:
  """FLOP/s of an n x n product: XLA (and PyTorch when installed), median of 5.

  dtype "bfloat16": bfloat16 factors, float32 accumulation and result (XLA), and
  bfloat16 factors and result (torch.mm).
  """
  a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), dtype)
  product = jax.jit(lambda a: jnp.dot(a, a, preferred_element_type=jnp.float32))
  product(a).block_until_ready()
  rates = []
  for _ in range(5):
    t = time.perf_counter()
    for _ in range(5):
      out = product(a)
    out.block_until_ready()
    rates.append(5 * 2 * n ** 3 / (time.perf_counter() - t))
  out = {"xla": statistics.median(rates)}
  try:
    import torch  # pylint: disable=g-import-not-at-top
    device = torch_device()
    b = torch.from_numpy(np.array(a.astype(jnp.float32))).to(device)
    b = b.to(torch.bfloat16) if dtype == "bfloat16" else b
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    torch.mm(b, b)
    sync()
    rates = []
    for _ in range(5):
      t = time.perf_counter()
      for _ in range(5):
        torch.mm(b, b)
      sync()
      rates.append(5 * 2 * n ** 3 / (time.perf_counter() - t))
    out["torch"] = statistics.median(rates)
  except ImportError:
    pass
  return out


def dtypes_for_this_machine(requested, explicit: bool, platform: str, extensions) -> tuple:
  """(matmul dtypes to time, why bfloat16 was dropped or None).

  On a CPU without AVX512-BF16, PyTorch's bfloat16 products fall back to a slow kernel:
  on 2026-12-06's AVX2-only EPYC, 2.0 and 1.6 GFLOP/s at sizes 256 and 512 against 60
  and 68 in float32, and a run was still in PyTorch's 2048 bfloat16 products after 18
  minutes. So bfloat16 is timed there only when --matmul_dtypes asks for it by name.
  extensions: machine.describe()'s cpu_vector_extensions (None where unknown: kept).
  """
  requested = list(requested)
  if (explicit or platform != "cpu" or "bfloat16" not in requested or extensions is None
      or "avx512_bf16" in extensions):
    return requested, None
  return ([d for d in requested if d != "bfloat16"],
          "not timed: this CPU has no AVX512-BF16, and on such a CPU (an AVX2-only EPYC) "
          "PyTorch's bfloat16 products ran 30 to 43 times slower than its float32 ones "
          "(pass --matmul_dtypes=float32,bfloat16 to time them anyway)")


def time_to_error(workdir: str, targets=(0.05, 0.0333)) -> dict:
  """Wall seconds and steps at the first validation check at or below each target error.

  The runs log the validation error (never the test error) during training; the test
  error is read once, at the end. None: never reached in the run. The steps are given
  beside the seconds because the seconds depend on what else shared the CPU.
  """
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    checks = [json.loads(l) for l in f if "validation_error" in l]
  with open(os.path.join(workdir, "results.json")) as f:
    final = json.load(f)
  out = {"workdir": workdir, "final_test_error": final["test_error"],
         "final_validation_error": final["validation_error"], "steps": final["steps"],
         "wall_seconds": final["wall_seconds"],
         "best_validation_error": min(c["validation_error"] for c in checks)}
  for target in targets:
    hit = next((c for c in checks if c["validation_error"] <= target), None)
    out[f"seconds_to_{100 * target:g}%"] = hit["elapsed_s"] if hit else None
    out[f"steps_to_{100 * target:g}%"] = hit["step"] if hit else None
  return out


def _print_time_to_error(rows: dict) -> None:
  for name, row in rows.items():
    print(f"{name}: 5% after {row['seconds_to_5%']} s (step {row['steps_to_5%']}), 3.33% after "
          f"{row['seconds_to_3.33%']} s (step {row['steps_to_3.33%']}) "
          f"(best validation error {row['best_validation_error']:.2%}, final test error "
          f"{row['final_test_error']:.2%} after {row['steps']} steps, {row['wall_seconds']:.0f} s)")


def _time_to_error_rows() -> dict:
  return {name: time_to_error(path) for name, path in map(name_and_workdir,
                                                           FLAGS.time_to_error_runs)}


def main(argv):
  del argv
  platform = jax.devices()[0].platform
  output = FLAGS.output or f"benchmarks/results/throughput_{platform}.json"
  if FLAGS.time_to_error_only:
    if not FLAGS.time_to_error_runs or not os.path.exists(output):
      raise SystemExit(f"--time_to_error_only needs --time_to_error_runs and an existing "
                       f"{output} (run the full benchmark once first).")
    with open(output) as f:
      results = json.load(f)
    rows = _time_to_error_rows()
    results.setdefault("time_to_error", {}).update(rows)
    _print_time_to_error(rows)
    write_results(results, output)
    return
  have_torch = importlib.util.find_spec("torch") is not None
  if not have_torch:
    print("PyTorch is not installed (pip install torch==2.13.0): timing ievae_jax alone.")
  elif torch_device() == "cuda":
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_float32_matmul_precision("high")   # TF32, as XLA's float32 products on a GPU
  results = {"platform": platform, "device": str(jax.devices()[0].device_kind),
             "num_devices": jax.device_count(), **machine.describe(),
             "jax_version": jax.__version__,
             "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
             "batch": f"{BATCH} labelled + {BATCH} unlabelled",
             "steps_per_window": FLAGS.steps_per_window, "windows": FLAGS.windows}
  for dtype in FLAGS.matmul_dtypes:
    if dtype not in config_lib.MATMUL_DTYPES:
      raise SystemExit(f"--matmul_dtypes: unknown {dtype!r}; use {config_lib.MATMUL_DTYPES}.")
  dtypes, skipped = dtypes_for_this_machine(FLAGS.matmul_dtypes, FLAGS["matmul_dtypes"].present,
                                            platform, results["cpu_vector_extensions"])
  if skipped:
    results["bfloat16_skipped_because"] = skipped
    print(f"bfloat16 {skipped}")
  rows = [(kind, dtype) for dtype in dtypes for kind in FLAGS.models]
  row_name = lambda kind, dtype: kind if dtype == "float32" else f"{kind}_{dtype}"
  results["matmul_flops_per_s_before"] = matmul_flops(FLAGS.matmul_size)
  if "bfloat16" in dtypes:
    results["bfloat16_matmul_flops_per_s_before"] = matmul_flops(FLAGS.matmul_size, "bfloat16")
  for kind, dtype in rows:
    ours, info = jax_step(kind, dtype)
    info["matmul_dtype"] = dtype
    contenders = {"jax": ours}
    if have_torch and dtype == "bfloat16":
      contenders["torch_eager"], info["torch"] = torch_step(kind, None)
      contenders["torch_eager_bfloat16"], info["torch_bfloat16"] = torch_step(kind, None, True)
    elif have_torch:
      info["torch_loss_relative_difference"] = check_torch_matches(kind)
      print(f"{kind}: PyTorch reference loss vs ours on the same weights and batch (no noise): "
            f"relative difference {info['torch_loss_relative_difference']:.1e}")
      contenders["torch_eager"], info["torch"] = torch_step(kind, None)
      for mode in FLAGS.torch_compile_modes if FLAGS.torch_compile else ():
        name = "torch_compile" if mode == "default" else f"torch_compile_{mode}"
        try:
          contenders[name], info[name] = torch_step(kind, mode)
        except Exception as e:  # pylint: disable=broad-except
          info[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    rates = {name: [] for name in contenders}
    for _ in range(FLAGS.windows):          # alternate: ours, torch eager, torch compiled, ...
      for name, window in contenders.items():
        rates[name].append(window())
    row = {"examples_per_s": statistics.median(rates["jax"]), "window_examples_per_s": rates,
           **info}
    row["achieved_flops_per_s"] = row["examples_per_s"] / (2 * BATCH) * info["flops_per_step"]
    if have_torch:
      torch_rates = {n: statistics.median(r) for n, r in rates.items() if n != "jax"}
      best = max(torch_rates, key=torch_rates.get)
      row["torch_examples_per_s"] = torch_rates[best]
      row["torch_best_mode"] = best
      row["torch_eager_examples_per_s"] = torch_rates["torch_eager"]
      row["torch_ratio"] = row["examples_per_s"] / row["torch_examples_per_s"]
      if dtype == "bfloat16":
        row["torch_float32_ratio"] = row["examples_per_s"] / torch_rates["torch_eager"]
    results[row_name(kind, dtype)] = row
  results["matmul_flops_per_s_after"] = matmul_flops(FLAGS.matmul_size)
  matmul = {"float32": max(results["matmul_flops_per_s_before"]["xla"],
                           results["matmul_flops_per_s_after"]["xla"])}
  if "bfloat16" in dtypes:
    results["bfloat16_matmul_flops_per_s_after"] = matmul_flops(FLAGS.matmul_size, "bfloat16")
    matmul["bfloat16"] = max(results["bfloat16_matmul_flops_per_s_before"]["xla"],
                             results["bfloat16_matmul_flops_per_s_after"]["xla"])
  for kind, dtype in rows:
    row = results[row_name(kind, dtype)]
    row["peak_fraction"] = row["achieved_flops_per_s"] / matmul[dtype]

  for dtype, rate in matmul.items():
    print(f"{dtype} {FLAGS.matmul_size}^2 matrix product through XLA: {rate / 1e9:.0f} GFLOP/s")
  print(f"{'model':<15}{'ours ex/s':>11}{'torch ex/s':>12}{'ratio':>7}{'GFLOP/step':>12}"
        f"{'GFLOP/s':>9}{'peak frac':>10}{'compile s':>10}")
  for kind, dtype in rows:
    r = results[row_name(kind, dtype)]
    torch_rate = f"{r['torch_examples_per_s']:.0f}" if "torch_examples_per_s" in r else "-"
    ratio = f"{r['torch_ratio']:.2f}" if "torch_ratio" in r else "-"
    print(f"{row_name(kind, dtype):<15}{r['examples_per_s']:>11.0f}{torch_rate:>12}{ratio:>7}"
          f"{r['flops_per_step'] / 1e9:>12.2f}{r['achieved_flops_per_s'] / 1e9:>9.1f}"
          f"{r['peak_fraction']:>10.2f}{r['compile_s']:>10.1f}")
  if FLAGS.time_to_error_runs:
    results["time_to_error"] = _time_to_error_rows()
    _print_time_to_error(results["time_to_error"])
  elif os.path.exists(output):
    # Those rows are read from finished runs' logs, not timed here: keep them.
    with open(output) as f:
      previous = json.load(f).get("time_to_error")
    if previous:
      results["time_to_error"] = previous
      print(f"time_to_error rows carried over from the previous {output}")
  write_results(results, output)


def write_results(results: dict, output: str) -> None:
  os.makedirs(os.path.dirname(output), exist_ok=True)
  checkpointing.write_json_atomically(output, results)
  print(f"written to {output}")


if __name__ == "__main__":
  app.run(main)
