"""Training: the loop around the jitted step of step.py, for one seed or several.

The step (TrainState, make_train_step and their helpers) lives in step.py and is
re-exported here, so `train_lib.make_train_step` and the like keep working.

Parallelism: batches are sharded along the "data" axis of a mesh over every
device of every process and the state is replicated; `jax.jit` inserts the
gradient all-reduce. Both batch sizes must divide by the device count. With
several processes (`jax.distributed`, initialised by the launcher), every process
computes the same batch indices from (seed, step) and materialises only its own
contiguous slice of each batch (`_global_batch`); only process 0 writes
config.json, metrics.jsonl and results.json, while all of them take part in
orbax's checkpointing. Evaluation runs on each process's first local device
from a host copy of the replicated parameters.

Non-finite losses: the step records the first step whose loss or gradients were
not finite (leaving the parameters as they were); the loop checks it at every
log, evaluation and checkpoint, stops with that step number, and never saves a
state that went through such a step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
import time
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from ievae_jax import checkpointing, data, evaluation, model
from ievae_jax.config import ConfigError, TrainConfig
from ievae_jax.step import (TrainState, create_train_state, default_alpha, entropy_weight,
                            make_optimizer, make_train_step, pixel_targets)

__all__ = ["NonFiniteLossError", "TrainingInterrupted", "TrainState", "create_train_state",
           "default_alpha", "entropy_weight", "make_optimizer", "make_train_step",
           "pixel_targets", "train_and_evaluate", "train_seeds"]

log = logging.getLogger("ievae_jax")


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; the message names the step."""


class TrainingInterrupted(Exception):
  """SIGTERM or SIGINT stopped training after saving a checkpoint."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


@contextlib.contextmanager
def _stop_requests():
  """Yields a list that receives the first SIGTERM / SIGINT, so the loop can save a
  checkpoint before it stops. The previous handlers are restored on exit; outside
  the main thread (where Python cannot install handlers) nothing is installed."""
  received = []
  if threading.current_thread() is not threading.main_thread():
    yield received
    return
  previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
              for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield received
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def _check_finite(bad: int, mngr, seed_note: str = "") -> None:
  if bad >= 0:
    last = mngr.latest_step()
    kept = f"the last good checkpoint (step {last}) is kept" if last is not None else \
        "no checkpoint had been written yet"
    raise NonFiniteLossError(
        f"The loss became non-finite at step {bad}{seed_note}; training stopped and {kept}. "
        f"Check the input data, or lower --learning_rate and train in a fresh --workdir.")


def _global_batch(batch: Optional[Dict[str, np.ndarray]], sharding: NamedSharding,
                  axis: int = 0):
  """The global array of a host batch that every process computed alike, built from
  this process's slice only (the rows, along the batch `axis`, its devices hold)."""
  if batch is None:
    return None
  n, p = jax.process_count(), jax.process_index()

  def put(a):
    rows = a.shape[axis] // n
    local = np.take(a, np.arange(p * rows, (p + 1) * rows), axis=axis)
    return jax.make_array_from_process_local_data(sharding, local, a.shape)
  return jax.tree.map(put, batch)


def _local_params(params: model.Params) -> model.Params:
  """Replicated parameters copied once onto this process's first device, where its own
  jitted evaluation runs (in multi-process runs the global array spans other hosts)."""
  return jax.device_put(jax.tree.map(np.asarray, params), jax.local_devices()[0])


def _validate_devices(config: TrainConfig, num_devices: int) -> None:
  for name in ("batch_size", "labelled_batch_size"):
    value = getattr(config, name)
    if value % num_devices:
      raise ConfigError(f"--{name}={value} does not divide by the {num_devices} devices; use a "
                        f"multiple of {num_devices}.")


def _truncate_metrics(path: str, last_step: int) -> None:
  """Keeps only the records of <workdir>/metrics.jsonl up to `last_step`."""
  if not os.path.exists(path) or jax.process_index() != 0:
    return
  with open(path) as f:
    kept = [line for line in f if line.strip() and json.loads(line)["step"] <= last_step]
  with open(path + ".tmp", "w") as f:
    f.writelines(kept)
  os.replace(path + ".tmp", path)


def _window_means(window_metrics) -> Dict[str, np.ndarray]:
  """Mean over the steps since the last log of every metric: scalars, or (S,) arrays
  for S vmapped seeds. One stack and one device-to-host copy per log."""
  stacked = jax.device_get(jax.tree.map(lambda *xs: jnp.stack(xs), *window_metrics))
  return {k: np.mean(v, axis=0) for k, v in stacked.items()}


def _log_window(means: Dict[str, float], done: int, num_steps: int, examples_per_s: float,
                elapsed: float, remaining: float, prefix: str = "") -> None:
  """Logs one run's window means (see `_window_means`)."""
  shown = [(name, means[key]) for name, key in (
      ("labelled elbo", "labelled_elbo"), ("elbo", "elbo"), ("unlabelled bound", "unlabelled_bound"),
      ("cross-entropy", "cross_entropy"), ("kl", "kl")) if key in means]
  log.info("step %d/%d | %sloss %.2f | %s | %.0f examples/s | elapsed %.0fs | remaining %.0fs",
           done, num_steps, prefix, means["loss"], " | ".join(f"{n} {v:.4g}" for n, v in shown),
           examples_per_s, elapsed, remaining)


@dataclasses.dataclass
class _Run:
  """One seed's run: its settings, data, checkpoints and files."""
  config: TrainConfig
  workdir: str
  splits: data.Splits
  mngr: Any
  wall_before: float = 0.0            # wall seconds of earlier sessions (from the checkpoint)
  start_step: int = 0
  wall_seconds: Optional[float] = None   # set when training ends
  examples_per_s: Optional[float] = None

  @property
  def metrics_path(self) -> str:
    return os.path.join(self.workdir, "metrics.jsonl")


def _alpha(run: _Run) -> float:
  """The run's alpha: the flag, or 0.1 N / N_l (see `default_alpha`)."""
  if run.config.alpha is not None:
    return run.config.alpha
  return default_alpha(run.splits.num_train, len(run.splits.labelled_images))


def _prepare_run(config: TrainConfig, workdir: str, arrays, like: TrainState):
  """Opens a seed's workdir (refusing other settings) and restores its latest state."""
  splits = data.make_splits(arrays, config.model.num_classes, config.labels,
                            config.validation_size, config.labelled_subset_seed)
  os.makedirs(workdir, exist_ok=True)
  checkpointing.check_workdir_config(workdir, config)
  run = _Run(config, workdir, splits, checkpointing.manager(workdir, config.keep_checkpoints))
  state = jax.device_put(create_train_state(jax.random.key(config.seed), config), like)
  restored = checkpointing.restore_latest(run.mngr, state, config)
  if jax.process_index() == 0:
    checkpointing.write_workdir_config(workdir, config)
  if restored is not None:
    state, saved_meta = restored
    run.wall_before = float(saved_meta.get("wall_seconds", 0.0))
    log.info("Resumed from the checkpoint at step %d in %s.", int(state.step), workdir)
  run.start_step = int(state.step)
  # A run killed after its last checkpoint logged steps it will now redo: drop them.
  _truncate_metrics(run.metrics_path, run.start_step)
  return run, state


def train_and_evaluate(config: TrainConfig, workdir: str,
                       arrays: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, Any]:
  """Trains (resuming from the latest checkpoint in `workdir`), evaluates, and writes
  <workdir>/results.json. `arrays` (as from `data.load`) skips reading the dataset.

  Raises ConfigError or DataError on bad settings or data (before compiling),
  NonFiniteLossError on a non-finite loss, and TrainingInterrupted after SIGTERM or
  SIGINT (a checkpoint of the last finished step is saved first).
  Returns the results dict.
  """
  return train_seeds(config, {config.seed: workdir}, arrays)[config.seed]


def train_seeds(config: TrainConfig, workdirs: Dict[int, str],
                arrays: Optional[Dict[str, np.ndarray]] = None) -> Dict[int, Dict[str, Any]]:
  """`train_and_evaluate` for several seeds of one configuration ({seed: workdir}).

  Seeds whose checkpoints stand at the same step train together in one compiled
  program (`make_train_step(..., vmap_seeds=True)`); each keeps its own workdir,
  checkpoints, metrics.jsonl and results.json, exactly as a run of its own would
  (up to floating-point differences of batched matrix products), and can be resumed
  alone or with the others. A single seed takes the plain (unvmapped) step.
  Returns {seed: results}.
  """
  config.validate()
  devices = jax.devices()
  _validate_devices(config, len(devices))
  if arrays is None:
    arrays = data.load(config.dataset, config.data_dir, config.tfds_data_dir)
  image_shape = tuple(int(d) for d in arrays["train_images"].shape[1:])
  if image_shape != tuple(config.model.image_shape):
    raise ConfigError(f"The {config.dataset} images have shape {image_shape}, the model expects "
                      f"{tuple(config.model.image_shape)}; set image_shape to match.")
  # Auto axes: sharding propagates through the step as in classic jit data parallelism.
  mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  replicated = NamedSharding(mesh, PartitionSpec())
  prepared = [_prepare_run(dataclasses.replace(config, seed=seed), workdir, arrays, replicated)
              for seed, workdir in workdirs.items()]
  groups = {}
  for run, state in prepared:
    groups.setdefault(run.start_step, []).append((run, state))
  results = {}
  for group in groups.values():
    runs = [run for run, _ in group]
    states = [state for _, state in group]
    final = _train_group(runs, states, mesh)
    for run, state in zip(runs, final):
      results[run.config.seed] = _finish(run, state, len(devices))
  return results


def _train_group(runs, states, mesh) -> list:
  """Trains runs at the same step together; returns their final states (one per run)."""
  config, splits = runs[0].config, runs[0].splits
  alpha = _alpha(runs[0])   # the same for every seed: it depends on N and N_l only
  vmapped = len(runs) > 1
  seed_axis = (None,) if vmapped else ()
  replicated = NamedSharding(mesh, PartitionSpec())
  batch_sharding = NamedSharding(mesh, PartitionSpec(*seed_axis, "data"))
  if vmapped:
    state = jax.device_put(jax.tree.map(lambda *xs: jnp.stack(xs), *states), replicated)
    seed_keys = jax.device_put(jnp.stack([jax.random.key(r.config.seed) for r in runs]),
                               replicated)
    step_fn = make_train_step(config, alpha, vmap_seeds=True)
    train_step = lambda state, labelled, unlabelled: step_fn(state, labelled, unlabelled,
                                                             seed_keys)
  else:
    state = states[0]
    train_step = make_train_step(config, alpha)
  unstack = (lambda state, i: jax.tree.map(lambda a: a[i], state)) if vmapped else \
      (lambda state, i: state)

  examples_per_step = config.labelled_batch_size + (
      config.batch_size if len(splits.unlabelled_images) else 0)
  seeds = ", ".join(str(r.config.seed) for r in runs)
  arch = config.model.arch
  if config.model.classifier_arch not in (None, arch):
    arch += f" ({config.model.classifier_arch} classifier)"
  log.info("Training %s %s on %s, seed(s) %s%s: %d labelled, %d unlabelled, %d validation, "
           "%d test; alpha=%.3g; %d device(s).", config.model.kind, arch,
           config.dataset, seeds, " (vmapped in one program)" if vmapped else "",
           len(splits.labelled_images), len(splits.unlabelled_images),
           len(splits.validation_images), len(splits.test_images), alpha, len(mesh.devices.flat))

  start_step = runs[0].start_step
  t_start = time.time()
  wall = lambda run: run.wall_before + time.time() - t_start

  def save(done, state):
    for i, run in enumerate(runs):
      checkpointing.save(run.mngr, done, unstack(state, i),
                         {"config": run.config.to_dict(), "wall_seconds": wall(run),
                          "alpha": alpha})

  def check_finite(state):
    bad = np.atleast_1d(jax.device_get(state.nonfinite_step))
    for i, run in enumerate(runs):
      _check_finite(int(bad[i]), run.mngr, f" (seed {run.config.seed})" if vmapped else "")

  def host_batch(step):
    per_seed = [data.training_batch(r.splits, step, r.config.seed, config.labelled_batch_size,
                                    config.batch_size) for r in runs]
    if not vmapped:
      return per_seed[0]
    stack = lambda *xs: np.stack(xs)
    labelled = jax.tree.map(stack, *[b[0] for b in per_seed])
    unlabelled = None if per_seed[0][1] is None else jax.tree.map(stack, *[b[1] for b in per_seed])
    return labelled, unlabelled

  window_start, window_metrics = time.time(), []
  with _stop_requests() as stop_signals:
    for step in range(start_step, config.num_steps):
      labelled, unlabelled = host_batch(step)
      labelled = _global_batch(labelled, batch_sharding, len(seed_axis))
      unlabelled = _global_batch(unlabelled, batch_sharding, len(seed_axis))
      state, metrics = train_step(state, labelled, unlabelled)
      window_metrics.append(metrics)
      done = step + 1
      records = [None] * len(runs)
      if done % config.log_every == 0 or done == config.num_steps:
        check_finite(state)
        seconds = time.time() - window_start
        rate = len(window_metrics) * examples_per_step * len(runs) / seconds
        remaining = (config.num_steps - done) * seconds / len(window_metrics)
        window = _window_means(window_metrics)
        for i, run in enumerate(runs):
          means = {k: float(v[i] if vmapped else v) for k, v in window.items()}
          _log_window(means, done, config.num_steps, rate, wall(run), remaining,
                      f"seed {run.config.seed} | " if vmapped else "")
          records[i] = {"step": done, "examples_per_s": rate, "elapsed_s": wall(run), **means}
        window_start, window_metrics = time.time(), []
      if (done % config.eval_every == 0 and len(splits.validation_images)
          and config.model.has_classes):
        check_finite(state)
        for i, run in enumerate(runs):
          error = evaluation.classification_error(
              _local_params(unstack(state, i).params), run.splits.validation_images,
              run.splits.validation_labels)
          log.info("step %d | %svalidation error %.4f", done,
                   f"seed {run.config.seed} | " if vmapped else "", error)
          records[i] = {**(records[i] or {"step": done}), "validation_error": error}
          teacher = unstack(state, i).teacher_params
          if teacher is not None:
            records[i]["teacher_validation_error"] = evaluation.classification_error(
                _local_params(teacher), run.splits.validation_images,
                run.splits.validation_labels)
            log.info("step %d | %steacher's validation error %.4f", done,
                     f"seed {run.config.seed} | " if vmapped else "",
                     records[i]["teacher_validation_error"])
      if jax.process_index() == 0:
        for run, record in zip(runs, records):
          if record is not None:
            with open(run.metrics_path, "a") as f:
              f.write(json.dumps(record) + "\n")
      if done % config.checkpoint_every == 0 or done == config.num_steps or stop_signals:
        check_finite(state)
        save(done, state)
      if stop_signals:
        for run in runs:
          run.mngr.close()
        where = ", ".join(r.workdir for r in runs)
        raise TrainingInterrupted(
            f"Stopped by {signal.Signals(stop_signals[0]).name} after step {done}; its checkpoint "
            f"is saved in {where}: rerun the same command to resume.", stop_signals[0])
  trained_steps = int(np.max(jax.device_get(state.step))) - start_step
  rate = (trained_steps * examples_per_step * len(runs) / (time.time() - t_start)
          if trained_steps else None)
  final = []
  for i, run in enumerate(runs):
    run.wall_seconds = wall(run)
    run.examples_per_s = rate
    run.mngr.close()
    final.append(unstack(state, i))
  return final


def _finish(run: _Run, state: TrainState, num_devices: int) -> Dict[str, Any]:
  """Test and validation error of a trained run; writes its results.json."""
  config, splits = run.config, run.splits
  final_params = _local_params(state.params)
  error = lambda images, labels: (evaluation.classification_error(final_params, images, labels)
                                  if config.model.has_classes and len(images) else None)
  results = {
      "model": config.model.kind,
      "test_error": error(splits.test_images, splits.test_labels),
      "validation_error": error(splits.validation_images, splits.validation_labels),
      "labels": len(splits.labelled_images),
      "seed": config.seed,
      "steps": int(state.step),
      "dataset": config.dataset,
      "wall_seconds": run.wall_seconds,
      "examples_per_s_this_process": run.examples_per_s,
      "alpha": _alpha(run),
      "num_devices": num_devices,
      "flags": config.to_dict(),
  }
  if state.teacher_params is not None:
    teacher = _local_params(state.teacher_params)
    results["teacher_test_error"] = evaluation.classification_error(
        teacher, splits.test_images, splits.test_labels)
    results["teacher_validation_error"] = (evaluation.classification_error(
        teacher, splits.validation_images, splits.validation_labels)
        if len(splits.validation_images) else None)
  if jax.process_index() == 0:
    checkpointing.write_json_atomically(os.path.join(run.workdir, "results.json"), results)
  log.info("seed %d: test error %s (validation %s) after %d steps, %.0f s; results in %s",
           config.seed, results["test_error"], results["validation_error"], results["steps"],
           run.wall_seconds, run.workdir)
  return results
