"""The launchers end to end on a few hundred examples, and their errors on bad input."""

import gzip
import json
import os
import shutil
import subprocess
import sys

import numpy as np
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


def _bad_dirs(tmp_path, small_mnist_dir, mnist_arrays):
  """Data directories with one thing wrong each."""
  made = {}
  def variant(name, edit):
    path = tmp_path / name
    shutil.copytree(small_mnist_dir, path)
    edit(path)
    made[name] = str(path)
  variant("missing_file", lambda p: os.remove(p / "train-labels-idx1-ubyte.gz"))
  def truncate(p):
    raw = (p / "train-images-idx3-ubyte.gz").read_bytes()
    (p / "train-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 3])
  variant("truncated", truncate)
  def bad_magic(p):
    with gzip.open(p / "t10k-labels-idx1-ubyte.gz", "wb") as f:
      f.write(b"\x00\x00\x09\x01" + (200).to_bytes(4, "big") + bytes(200))
  variant("bad_magic", bad_magic)
  def label_out_of_range(p):
    labels = mnist_arrays["train_labels"][:600].copy()
    labels[5] = 11
    write_idx(str(p / "train-labels-idx1-ubyte.gz"), labels)
  variant("label_out_of_range", label_out_of_range)
  def wrong_shape(p):
    write_idx(str(p / "t10k-labels-idx1-ubyte.gz"), mnist_arrays["test_labels"][:150])
  variant("wrong_shape", wrong_shape)
  return made


BAD_INPUT = {
    # case: (flags, data directory variant or None for the good one, the sentence's key part)
    "dataset": (["--dataset=cifar"], None, "Unknown dataset 'cifar'"),
    "arch": (["--arch=resnet"], None, "Unknown architecture 'resnet'"),
    "routing": (["--routing=sideways"], None, "Unknown routing 'sideways'"),
    "labels_multiple": (["--labels=15"], None,
                        "--labels=15 is not a positive multiple of the 10 classes"),
    "labels_zero": (["--labels=0"], None, "--labels=0 is not a positive multiple"),
    "labels_too_many": (["--labels=1000"], None, "--labels=1000 exceeds the 500 training examples"),
    "labels_text": (["--labels=lots"], None, "is not a number"),
    "alpha_text": (["--alpha=strong"], None, "--alpha='strong' is not a number"),
    "alpha_negative": (["--alpha=-1"], None, "--alpha must be >= 0, got -1.0"),
    "batch_size": (["--batch_size=0"], None, "--batch_size must be a positive integer, got 0"),
    "num_steps": (["--num_steps=-5"], None, "--num_steps must be a positive integer, got -5"),
    "z_dim": (["--z_dim=0"], None, "z_dim must be a positive integer, got 0"),
    "learning_rate": (["--learning_rate=-1"], None, "--learning_rate must be positive"),
    "lr_schedule": (["--lr_schedule=linear"], None, "Unknown lr_schedule 'linear'"),
    "no_dir": (["--data_dir=/nonexistent/mnist"], None, "does not exist"),
    "missing_file": ([], "missing_file", "lacks train-labels-idx1-ubyte.gz"),
    "truncated": ([], "truncated", "truncated or corrupt"),
    "bad_magic": ([], "bad_magic", "expected unsigned bytes"),
    "label_out_of_range": ([], "label_out_of_range", "labels go up to 11"),
    "wrong_shape": ([], "wrong_shape", "do not match"),
    "unwritable_workdir": (["--workdir=/proc/ievae_run"], None, "Cannot write to --workdir"),
}


@pytest.fixture(scope="module")
def semisup_main():
  """The semi-supervised launcher's body, run in this process with given flags."""
  from absl import flags
  from experiments import mnist_semisup
  def run(argv):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["mnist_semisup", *argv])
    mnist_semisup.main([])
  return run


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_gives_one_clear_sentence(tmp_path, small_mnist_dir, mnist_arrays, capsys,
                                            semisup_main, case):
  args, variant, message = BAD_INPUT[case]
  data_dir = _bad_dirs(tmp_path, small_mnist_dir, mnist_arrays)[variant] if variant else \
      small_mnist_dir
  workdir = tmp_path / "run"
  argv = [f"--workdir={workdir}", f"--data_dir={data_dir}", *SMALL, *args]
  with pytest.raises(SystemExit) as exit_info:
    semisup_main(argv)
  assert exit_info.value.code == 1
  stderr = capsys.readouterr().err
  error_lines = [l for l in stderr.splitlines() if l.startswith("error:")]
  assert len(error_lines) == 1 and message in error_lines[0], stderr[-2000:]
  assert not os.path.exists(workdir / "checkpoints")


def test_workdir_of_another_run_is_not_overwritten(tmp_path, small_mnist_dir, capsys,
                                                   semisup_main):
  workdir = tmp_path / "run"
  semisup_main([f"--workdir={workdir}", f"--data_dir={small_mnist_dir}", "--labels=20", *SMALL])
  before = sorted(os.listdir(workdir / "checkpoints"))
  config_before = (workdir / "config.json").read_text()
  with pytest.raises(SystemExit) as exit_info:
    semisup_main([f"--workdir={workdir}", f"--data_dir={small_mnist_dir}", "--labels=20", *SMALL,
                  "--z_dim=5"])
  assert exit_info.value.code == 1
  assert "model.z_dim (saved 3, now 5)" in capsys.readouterr().err
  assert sorted(os.listdir(workdir / "checkpoints")) == before
  assert (workdir / "config.json").read_text() == config_before


def test_batch_not_divisible_by_devices_exits_before_compiling(tmp_path, small_mnist_dir):
  run = _run("experiments.mnist_semisup", f"--workdir={tmp_path / 'run'}",
             f"--data_dir={small_mnist_dir}", "--labels=20", *SMALL,
             env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  assert run.returncode == 1
  assert "error: --batch_size=10 does not divide by the 4 devices; use a multiple of 4." in \
      run.stderr
  assert "Traceback" not in run.stderr
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


@pytest.mark.parametrize("argv, alpha", [([], 550.0), (["--alpha=60"], 60.0),
                                         (["--alpha=kingma"], None)])
def test_alpha_flag_takes_a_number_or_kingma(semisup_main, argv, alpha):
  from absl import flags
  from experiments import common
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["mnist_semisup", *argv])
  assert common.config_from_flags(supervised=False).alpha == alpha


def test_matmul_dtype_flag_reaches_the_model(semisup_main):
  from absl import flags
  from experiments import common
  configs = {}
  for argv in ([], ["--matmul_dtype=bfloat16"]):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["mnist_semisup", *argv])
    configs[tuple(argv)] = common.config_from_flags(supervised=False)
  float32, bfloat16 = configs[()], configs[("--matmul_dtype=bfloat16",)]
  assert (float32.model.matmul_dtype, bfloat16.model.matmul_dtype) == ("float32", "bfloat16")
  # Its workdir digest: tests/test_sweep.py::test_default_workdirs_of_earlier_runs_are_stable.


def test_label_seed_keeps_one_labelled_subset_across_restarts(semisup_main, mnist_arrays):
  from absl import flags
  from experiments import common
  from ievae_jax import data

  def labelled_of(argv):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["mnist_semisup", *argv])
    config = common.config_from_flags(supervised=False)
    splits = data.make_splits(mnist_arrays, 10, config.labels, config.validation_size,
                              config.labelled_subset_seed)
    return config, splits.labelled_images

  config, restart = labelled_of(["--seed=1", "--label_seed=0"])
  _, seed0 = labelled_of(["--seed=0"])
  _, seed1 = labelled_of(["--seed=1"])
  assert config.seed == 1
  np.testing.assert_array_equal(restart, seed0)
  assert not np.array_equal(restart, seed1)


def test_restart_selection_ranks_runs_of_one_labelled_set_by_u(tmp_path, small_mnist_dir,
                                                               semisup_main):
  runs = {"a": ["--seed=0"], "b": ["--seed=1", "--label_seed=0"], "c": ["--seed=2"]}
  for name, args in runs.items():
    semisup_main([f"--workdir={tmp_path / name}", f"--data_dir={small_mnist_dir}", "--labels=20",
                  *SMALL, *args])
  output = tmp_path / "selection.json"
  run = _run("benchmarks.restart_selection",
             "--runs=" + ",".join(f"{n}={tmp_path / n}" for n in runs),
             f"--data_dir={small_mnist_dir}", "--num_images=50", "--validation_breakdown",
             f"--output={output}")
  assert run.returncode == 0, run.stderr[-3000:]
  selection = json.load(open(output))
  rows, chosen = selection["runs"], selection["chosen"]
  assert rows["a"]["group"] == rows["b"]["group"] != rows["c"]["group"]
  best = max("ab", key=lambda n: rows[n]["mean_unlabelled_bound"])
  other = "b" if best == "a" else "a"
  assert chosen == {rows["a"]["group"]: best, rows["c"]["group"]: "c"}
  assert rows[best]["u_below_chosen"] == 0.0
  gap = rows[best]["mean_unlabelled_bound"] - rows[other]["mean_unlabelled_bound"]
  assert rows[other]["u_below_chosen"] == pytest.approx(gap, abs=1e-4) and gap > 0
  assert rows["a"]["num_images"] == 50 and 0 <= rows["a"]["validation_error"] <= 1
  split = rows[other]["validation_breakdown"]
  parts = ("both_right", "only_chosen_right", "only_other_right", "both_wrong")
  assert sum(split[p]["count"] for p in parts) == split["all"]["count"] == 100
  assert "validation_breakdown" not in rows[best]
  at_step = _run("benchmarks.restart_selection", f"--runs=a={tmp_path / 'a'}",
                 f"--data_dir={small_mnist_dir}", "--num_images=50", "--step=2",
                 f"--output={output}")
  assert at_step.returncode == 0, at_step.stderr[-3000:]
  row = json.load(open(output))["runs"]["a"]
  logged = [json.loads(l) for l in open(tmp_path / "a" / "metrics.jsonl")]
  assert row["steps"] == 2 and row["test_error"] is None
  assert row["validation_error"] == [m for m in logged if m["step"] == 2][-1]["validation_error"]


def test_confusion_benchmark_reports_q_and_the_generative_model_on_validation(
    tmp_path, small_mnist_dir, semisup_main):
  import jax
  from benchmarks.finished_runs import finished_runs
  from ievae_jax import evaluation
  semisup_main([f"--workdir={tmp_path / 'a'}", f"--data_dir={small_mnist_dir}", "--labels=20",
                *SMALL])
  output = tmp_path / "confusion.json"
  run = _run("benchmarks.confusion", f"--runs=a={tmp_path / 'a'}",
             f"--data_dir={small_mnist_dir}", "--generative_draws=2", f"--output={output}")
  assert run.returncode == 0, run.stderr[-3000:]
  row = json.load(open(output))["a"]
  (finished,) = finished_runs([f"a={tmp_path / 'a'}"], small_mnist_dir)
  labels = finished.splits.validation_labels
  q = evaluation.predict(finished.params, finished.splits.validation_images)
  generative = evaluation.generative_predictions(
      finished.params, finished.splits.validation_images, jax.random.key(0), 2)
  assert row["error"] == pytest.approx(np.mean(q != labels))
  assert row["generative_error"] == pytest.approx(np.mean(generative != labels))
  assert row["generative_agreement"] == pytest.approx(np.mean(generative == q))
  for c in row["top_confusions"]:
    images = (labels == c["true"]) & (q == c["predicted"])
    assert c["count"] == images.sum()
    assert c["generative_agrees"] == np.sum(generative[images] == c["predicted"])
  assert "argmax_y L(x, y)" in run.stdout


def test_finished_runs_loads_each_run_and_leaves_logging_as_it_was(tmp_path, small_mnist_dir,
                                                                  semisup_main):
  import logging
  import jax
  from benchmarks.finished_runs import finished_runs
  from ievae_jax import checkpointing
  semisup_main([f"--workdir={tmp_path / 'a'}", f"--data_dir={small_mnist_dir}", "--labels=20",
                *SMALL])
  absl_logger = logging.getLogger("absl")
  before = absl_logger.level
  absl_logger.setLevel(logging.INFO)
  try:
    runs = list(finished_runs([f"a={tmp_path / 'a'}"], small_mnist_dir, step=2))
    assert absl_logger.level == logging.INFO
  finally:
    absl_logger.setLevel(before)
  (run,) = runs
  assert run.name == "a" and run.config.labels == 20 and len(run.splits.labelled_labels) == 20
  expected = checkpointing.load(str(tmp_path / "a"), 2)
  for got, want in zip(jax.tree.leaves(run.params), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(got, want)
