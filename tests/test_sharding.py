"""Data parallelism: the same run on 1 and on 4 (simulated CPU) devices."""

import json
import os
import subprocess
import sys

import jax
import numpy as np

from ievae_jax import checkpointing, train_lib
from ievae_jax.config import TrainConfig
from tests.conftest import REPO

ARGS = ["--labels=20", "--num_steps=6", "--batch_size=12", "--labelled_batch_size=12",
        "--hidden=32", "--z_dim=3", "--r_dim=4", "--validation_size=100", "--log_every=3",
        "--eval_every=6", "--checkpoint_every=6"]


def _train(workdir, data_dir, devices):
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  run = subprocess.run([sys.executable, "-m", "experiments.mnist_semisup", f"--workdir={workdir}",
                        f"--data_dir={data_dir}", *ARGS], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env=env)
  assert run.returncode == 0, run.stderr[-3000:]
  assert f"{devices} device(s)" in run.stderr
  config = TrainConfig.from_dict(json.load(open(os.path.join(workdir, "config.json"))))
  like = train_lib.create_train_state(jax.random.key(0), config)
  state, _ = checkpointing.restore_latest(checkpointing.manager(workdir), like)
  losses = [json.loads(l)["loss"] for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return state, losses


def test_four_devices_match_one(tmp_path, small_mnist_dir):
  single, single_losses = _train(str(tmp_path / "one"), small_mnist_dir, 1)
  sharded, sharded_losses = _train(str(tmp_path / "four"), small_mnist_dir, 4)
  np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-5)  # reduction order, amplified by Adam
