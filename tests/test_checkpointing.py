"""Checkpoints: round trip, refusal of other settings, and ievae_jax.load."""

import os

import jax
import numpy as np
import pytest

import ievae_jax
from ievae_jax import checkpointing, train_lib
from ievae_jax.config import ConfigError
from tests.conftest import tiny_train_config


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_restore_round_trip(tmp_path):
  config = tiny_train_config()
  state = train_lib.create_train_state(jax.random.key(5), config)
  state = state.replace(step=state.step + 7)
  mngr = checkpointing.manager(str(tmp_path))
  checkpointing.save(mngr, 7, state, {"wall_seconds": 1.5})
  fresh = train_lib.create_train_state(jax.random.key(6), config)
  restored, meta = checkpointing.restore_latest(mngr, fresh)
  assert meta == {"wall_seconds": 1.5}
  assert int(restored.step) == 7
  assert restored.params.config == config.model
  _assert_trees_equal(restored, state)
  with pytest.raises(AssertionError):
    _assert_trees_equal(fresh.params, state.params)


def test_restore_latest_is_none_in_an_empty_workdir(tmp_path):
  config = tiny_train_config()
  state = train_lib.create_train_state(jax.random.key(0), config)
  assert checkpointing.restore_latest(checkpointing.manager(str(tmp_path)), state) is None


def test_workdir_of_other_settings_is_refused(tmp_path):
  config = tiny_train_config()
  checkpointing.check_workdir_config(str(tmp_path), config)
  checkpointing.write_workdir_config(str(tmp_path), config)
  checkpointing.check_workdir_config(str(tmp_path), config.__class__(
      **{**config.__dict__, "num_steps": 99}))  # resumable change
  other = config.__class__(**{**config.__dict__,
                              "model": config.model.__class__(
                                  **{**config.model.__dict__, "z_dim": 5})})
  with pytest.raises(ConfigError, match=r"model\.z_dim \(saved 3, now 5\)"):
    checkpointing.check_workdir_config(str(tmp_path), other)


def test_load_returns_the_trained_params(tmp_path, small_mnist_dir):
  from ievae_jax import data
  config = tiny_train_config(data_dir=small_mnist_dir)
  arrays = data.load("mnist", small_mnist_dir)
  train_lib.train_and_evaluate(config, str(tmp_path), arrays)
  params = ievae_jax.load(str(tmp_path))
  assert isinstance(params, ievae_jax.Params) and params.config == config.model
  x = arrays["test_images"][:8].astype(np.float32) / 255
  logits = ievae_jax.classify(params, x)
  assert logits.shape == (8, 10) and np.all(np.isfinite(logits))
  assert sorted(os.listdir(tmp_path / "checkpoints"))[-1] == "4"
