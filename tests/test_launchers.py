"""The launchers end to end on a few hundred examples, and their errors on bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, write_idx

SMALL = ["--num_steps=4", "--batch_size=10", "--labelled_batch_size=10", "--hidden=32",
         "--z_dim=3", "--r_dim=4", "--validation_size=100", "--log_every=2", "--eval_every=2",
         "--checkpoint_every=2"]


def _run(module, *args, env=None):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env={**os.environ, **(env or {})})


def test_semisup_launcher_end_to_end_and_resume(tmp_path, small_mnist_dir):
  workdir = str(tmp_path / "run")
  args = ["--labels=20", f"--data_dir={small_mnist_dir}", f"--workdir={workdir}", *SMALL]
  first = _run("experiments.mnist_semisup", *args)
  assert first.returncode == 0, first.stderr[-3000:]
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert results["labels"] == 20 and results["steps"] == 4 and results["dataset"] == "mnist"
  assert 0 <= results["test_error"] <= 1 and results["flags"]["model"]["hidden"] == 32
  assert "examples/s" in first.stderr and "remaining" in first.stderr
  again = _run("experiments.mnist_semisup", *args[:-1], "--num_steps=6")
  assert again.returncode == 0, again.stderr[-3000:]
  assert "Resumed from the checkpoint at step 4" in again.stderr
  assert json.load(open(os.path.join(workdir, "results.json")))["steps"] == 6


def test_supervised_launcher_and_data_dir_from_environment(tmp_path, small_mnist_dir):
  workdir = str(tmp_path / "run")
  run = _run("experiments.mnist_supervised", f"--workdir={workdir}", *SMALL,
             env={"IEVAE_DATA_DIR": small_mnist_dir})
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert results["labels"] == 500 and results["flags"]["labels"] is None


def _bad_dirs(tmp_path, small_mnist_dir):
  missing = tmp_path / "missing_file"
  shutil.copytree(small_mnist_dir, missing)
  os.remove(missing / "train-labels-idx1-ubyte.gz")
  truncated = tmp_path / "truncated"
  shutil.copytree(small_mnist_dir, truncated)
  raw = (truncated / "train-images-idx3-ubyte.gz").read_bytes()
  (truncated / "train-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 3])
  return str(missing), str(truncated)


@pytest.mark.parametrize("case", [
    "dataset", "labels_multiple", "labels_too_many", "labels_text", "missing_file", "truncated",
    "no_dir", "arch", "learning_rate"])
def test_bad_input_gives_one_clear_sentence(tmp_path, small_mnist_dir, case):
  missing, truncated = _bad_dirs(tmp_path, small_mnist_dir)
  base = [f"--workdir={tmp_path / 'run'}", *SMALL]
  args, message = {
      "dataset": (["--dataset=cifar", f"--data_dir={small_mnist_dir}"], "Unknown dataset 'cifar'"),
      "labels_multiple": (["--labels=15", f"--data_dir={small_mnist_dir}"],
                          "--labels=15 is not a positive multiple of the 10 classes"),
      "labels_too_many": (["--labels=1000", f"--data_dir={small_mnist_dir}"],
                          "--labels=1000 exceeds the 500 training examples"),
      "labels_text": (["--labels=lots", f"--data_dir={small_mnist_dir}"], "is not a number"),
      "missing_file": ([f"--data_dir={missing}"], "lacks train-labels-idx1-ubyte.gz"),
      "truncated": ([f"--data_dir={truncated}"], "truncated or corrupt"),
      "no_dir": ([f"--data_dir={tmp_path / 'nowhere'}"], "does not exist"),
      "arch": (["--arch=resnet", f"--data_dir={small_mnist_dir}"], "Unknown architecture"),
      "learning_rate": (["--learning_rate=-1", f"--data_dir={small_mnist_dir}"],
                        "--learning_rate must be positive"),
  }[case]
  run = _run("experiments.mnist_semisup", *args, *base)
  assert run.returncode == 1
  assert message in run.stderr, run.stderr[-2000:]
  assert "Traceback" not in run.stderr
  error_lines = [l for l in run.stderr.splitlines() if l.startswith("error:")]
  assert len(error_lines) == 1
  assert not os.path.exists(tmp_path / "run" / "checkpoints")
