"""Runs that survive: SIGKILL and SIGTERM mid-run, then the same command resumes to
bitwise the parameters of an uninterrupted run; a save cut short leaves the previous
checkpoint restorable; settings that do not match a checkpoint are refused."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ievae_jax import checkpointing, data, train_lib
from ievae_jax.config import ConfigError
from tests.conftest import REPO, tiny_model_config, tiny_train_config

STEPS = 600
ARGS = ["--labels=20", f"--num_steps={STEPS}", "--batch_size=10", "--labelled_batch_size=10",
        "--hidden=32", "--z_dim=3", "--r_dim=4", "--validation_size=100", "--log_every=50",
        "--eval_every=300", "--checkpoint_every=50", "--keep_checkpoints=2"]


def _command(workdir, data_dir):
  return [sys.executable, "-m", "experiments.mnist_semisup", f"--workdir={workdir}",
          f"--data_dir={data_dir}", *ARGS]


def _final_state(workdir):
  config = json.load(open(os.path.join(workdir, "config.json")))
  like = train_lib.create_train_state(jax.random.key(0),
                                      tiny_train_config().from_dict(config))
  state, _ = checkpointing.restore_latest(checkpointing.manager(workdir), like)
  return jax.tree.map(np.asarray, state)


def _interrupt(workdir, data_dir, signum):
  """Starts a run, sends `signum` once its first checkpoint exists; returns the process."""
  os.makedirs(workdir)
  log = open(os.path.join(workdir, "log.txt"), "w")
  process = subprocess.Popen(_command(workdir, data_dir), cwd=REPO, stdout=log,
                             stderr=subprocess.STDOUT)
  first = os.path.join(workdir, "checkpoints", "50")
  deadline = time.time() + 240
  while not os.path.isdir(first) and time.time() < deadline and process.poll() is None:
    time.sleep(0.02)
  process.send_signal(signum)
  process.wait(timeout=120)
  log.close()
  return process, open(os.path.join(workdir, "log.txt")).read()


def test_killed_and_terminated_runs_resume_bitwise(tmp_path, small_mnist_dir):
  straight = str(tmp_path / "straight")
  done = subprocess.run(_command(straight, small_mnist_dir), cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  reference = _final_state(straight)
  reference_results = json.load(open(os.path.join(straight, "results.json")))

  for signum, expected_code in ((signal.SIGKILL, -signal.SIGKILL), (signal.SIGTERM, 143)):
    workdir = str(tmp_path / signal.Signals(signum).name)
    process, output = _interrupt(workdir, small_mnist_dir, signum)
    assert process.returncode == expected_code, output[-3000:]
    assert not os.path.exists(os.path.join(workdir, "results.json")), "the run was not cut short"
    if signum == signal.SIGTERM:
      stderr = output
      assert "Stopped by SIGTERM after step" in stderr and "rerun the same command" in stderr
      saved = int(stderr.split("Stopped by SIGTERM after step ")[1].split(";")[0])
      assert checkpointing.manager(workdir).latest_step() == saved
    resumed = subprocess.run(_command(workdir, small_mnist_dir), cwd=REPO, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from the checkpoint at step" in resumed.stderr
    state = _final_state(workdir)
    assert int(state.step) == STEPS
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(state)):
      np.testing.assert_array_equal(a, b)
    logged = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))]
    assert logged == sorted(set(logged)) and logged[-1] == STEPS   # no step logged twice
    results = json.load(open(os.path.join(workdir, "results.json")))
    for key in ("test_error", "validation_error", "steps", "labels"):
      assert results[key] == reference_results[key]


def test_a_save_cut_short_leaves_the_previous_checkpoint(tmp_path, small_mnist_dir):
  arrays = data.load("mnist", small_mnist_dir)
  workdir = str(tmp_path / "run")
  train_lib.train_and_evaluate(tiny_train_config(num_steps=4), workdir, arrays)
  checkpoints = os.path.join(workdir, "checkpoints")
  # What a kill during the save of step 6 leaves: orbax's temporary directory, half written.
  partial = os.path.join(checkpoints, "6.orbax-checkpoint-tmp-1234567")
  shutil.copytree(os.path.join(checkpoints, "4"), partial)
  for root, _, files in os.walk(partial):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
  assert checkpointing.manager(workdir).latest_step() == 4
  results = train_lib.train_and_evaluate(tiny_train_config(num_steps=6), workdir, arrays)
  assert results["steps"] == 6
  straight = train_lib.train_and_evaluate(tiny_train_config(num_steps=6), str(tmp_path / "b"),
                                          arrays)
  assert results["test_error"] == straight["test_error"]


def test_checkpoint_of_other_settings_is_refused_even_without_config_json(tmp_path,
                                                                          small_mnist_dir):
  arrays = data.load("mnist", small_mnist_dir)
  workdir = str(tmp_path / "run")
  train_lib.train_and_evaluate(tiny_train_config(num_steps=2), workdir, arrays)
  os.remove(os.path.join(workdir, "config.json"))
  other = tiny_train_config(num_steps=4, learning_rate=0.5)
  with pytest.raises(ConfigError, match=r"checkpoint at step 2 .* learning_rate \(saved 0.001, "
                                        r"now 0.5\)"):
    train_lib.train_and_evaluate(other, workdir, arrays)
  assert not os.path.exists(os.path.join(workdir, "config.json"))  # nothing rewritten
  # Other shapes are refused by name too, before orbax tries to load mismatched arrays.
  wider = tiny_train_config(num_steps=4, model=tiny_model_config(hidden=48))
  with pytest.raises(ConfigError, match=r"model\.hidden \(saved 32, now 48\)"):
    train_lib.train_and_evaluate(wider, workdir, arrays)


def test_float_images_with_nan_are_refused(small_mnist_dir):
  arrays = dict(data.load("mnist", small_mnist_dir))
  images = arrays["train_images"].astype(np.float32) / 255
  images[0, 0, 0, 0] = np.nan
  arrays["train_images"] = images
  with pytest.raises(data.DataError, match="must be a uint8 array"):
    train_lib.train_and_evaluate(tiny_train_config(), "/nonexistent/unused", arrays)
