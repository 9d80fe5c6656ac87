"""Checkpoints in <workdir>/checkpoints/<step> through orbax's CheckpointManager.

Each checkpoint holds the train state (step, params, optimiser state) and a JSON
item with the run's config and elapsed training time. Orbax writes into a
temporary directory and renames it when complete, so a run killed mid-save leaves
the previous checkpoint restorable. Saves are synchronous: the train step donates
its state, so an asynchronous save could read freed buffers.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Tuple

import jax
import orbax.checkpoint as ocp

from ievae_jax import model, step as step_lib
from ievae_jax.config import ConfigError, ModelConfig, TrainConfig

CONFIG_FILE = "config.json"


def manager(workdir: str, keep: int = 3) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.LatestN(keep),
      enable_async_checkpointing=False,
      create=True)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta)), force=True)
  mngr.wait_until_finished()


def restore_latest(mngr: ocp.CheckpointManager, like: Any,
                   config: Optional[TrainConfig] = None) -> Optional[Tuple[Any, dict]]:
  """(state, meta) of the latest checkpoint, shaped and sharded like `like`; None if none.

  With `config`, the checkpoint's saved settings are read and compared first, so a
  checkpoint of other settings is refused (ConfigError naming them) before any
  array is loaded.
  """
  step = mngr.latest_step()
  if step is None:
    return None
  if config is not None:
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    check_same_settings(meta["config"], config,
                        f"The checkpoint at step {step} in {os.path.dirname(mngr.directory)}")
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                        meta=ocp.args.JsonRestore()))
  return restored["state"], restored["meta"]


def write_json_atomically(path: str, obj: Any) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def mismatched_settings(saved: dict, current: dict, prefix: str = "") -> list:
  """Names of the settings whose values differ between two config dicts."""
  out = []
  for key in sorted(set(saved) | set(current)):
    a, b = saved.get(key), current.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += mismatched_settings(a, b, f"{prefix}{key}.")
    elif (list(a) if isinstance(a, (list, tuple)) else a) != (
        list(b) if isinstance(b, (list, tuple)) else b):
      out.append(f"{prefix}{key} (saved {a!r}, now {b!r})")
  return out


# Settings that may change when a run resumes: they do not change what a step computes.
RESUMABLE_SETTINGS = ("num_steps", "log_every", "eval_every", "checkpoint_every",
                      "keep_checkpoints", "data_dir", "tfds_data_dir")


def check_same_settings(saved: dict, config: TrainConfig, where: str) -> None:
  """Raises ConfigError naming every setting (beyond RESUMABLE_SETTINGS) that differs."""
  relevant = lambda d: {k: v for k, v in d.items() if k not in RESUMABLE_SETTINGS}
  try:  # fills settings added since the run was saved with their defaults
    saved = TrainConfig.from_dict(saved).to_dict()
  except (TypeError, KeyError):
    pass
  diff = mismatched_settings(relevant(saved), relevant(config.to_dict()))
  if diff:
    raise ConfigError(f"{where} holds a run with other settings: {'; '.join(diff)}. Use a fresh "
                      f"--workdir, or the saved settings to resume.")


def check_workdir_config(workdir: str, config: TrainConfig) -> None:
  """Refuses a workdir whose config.json holds other settings (ConfigError)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    with open(path) as f:
      check_same_settings(json.load(f), config, f"Workdir {workdir}")


def write_workdir_config(workdir: str, config: TrainConfig) -> None:
  write_json_atomically(os.path.join(workdir, CONFIG_FILE), config.to_dict())


def saved_config(workdir: str) -> TrainConfig:
  """The TrainConfig a run in `workdir` was made with."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: {workdir} is not an ievae_jax run directory.")
  with open(path) as f:
    return TrainConfig.from_dict(json.load(f))


def load(workdir: str, step: Optional[int] = None):
  """The trained `model.Params` saved in `workdir` (latest checkpoint by default)."""
  config = saved_config(workdir)
  like = jax.eval_shape(lambda: step_lib.create_train_state(jax.random.key(0), config))
  mngr = manager(workdir, config.keep_checkpoints)
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints; train the run first.")
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(like)))
  params = restored["state"].params
  assert isinstance(params, model.Params) and isinstance(params.config, ModelConfig)
  return params
