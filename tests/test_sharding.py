"""Data parallelism: the same run on 1 and on 8 (simulated CPU) devices, and on two
processes joined by jax.distributed on 127.0.0.1 (gloo collectives)."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from ievae_jax import checkpointing, train_lib
from ievae_jax.config import TrainConfig
from tests.conftest import REPO

ARGS = ["--labels=20", "--num_steps=6", "--batch_size=16", "--labelled_batch_size=16",
        "--hidden=32", "--z_dim=3", "--r_dim=4", "--validation_size=100", "--log_every=3",
        "--eval_every=6", "--checkpoint_every=6"]


def _train(workdir, data_dir, devices):
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  run = subprocess.run([sys.executable, "-m", "experiments.mnist_semisup", f"--workdir={workdir}",
                        f"--data_dir={data_dir}", *ARGS], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env=env)
  assert run.returncode == 0, run.stderr[-3000:]
  assert f"{devices} device(s)" in run.stderr
  losses = [json.loads(l)["loss"] for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return _restore(workdir), losses


def _restore(workdir):
  config = TrainConfig.from_dict(json.load(open(os.path.join(workdir, "config.json"))))
  like = train_lib.create_train_state(jax.random.key(0), config)
  state, _ = checkpointing.restore_latest(checkpointing.manager(workdir), like)
  return state


def test_eight_devices_match_one(tmp_path, small_mnist_dir):
  single, single_losses = _train(str(tmp_path / "one"), small_mnist_dir, 1)
  sharded, sharded_losses = _train(str(tmp_path / "eight"), small_mnist_dir, 8)
  np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-5)  # reduction order, amplified by Adam


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.multiprocess
def test_two_processes_match_one(tmp_path, small_mnist_dir):
  """Two jax.distributed processes (one CPU device each) reproduce one process's run."""
  single, single_losses = _train(str(tmp_path / "one"), small_mnist_dir, 1)
  workdir = str(tmp_path / "two")
  address = f"127.0.0.1:{_free_port()}"
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  procs = [subprocess.Popen(
      [sys.executable, "-m", "experiments.mnist_semisup", f"--workdir={workdir}",
       f"--data_dir={small_mnist_dir}", *ARGS, f"--coordinator_address={address}",
       "--num_processes=2", f"--process_id={i}"], cwd=REPO, env=env, text=True,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  outputs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  assert "2 device(s)" in outputs[0][1] and "Gloo" in outputs[0][0] + outputs[0][1]
  losses = [json.loads(l)["loss"] for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert len(losses) == len(single_losses) == 2   # written once, by process 0
  np.testing.assert_allclose(losses, single_losses, rtol=1e-5)
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert results["num_devices"] == 2 and results["steps"] == 6
  state = _restore(workdir)
  for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-5)
