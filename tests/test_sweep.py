"""Seeds vmapped in one program, and the sweep command (skip finished runs, resume the rest)."""

import glob
import json
import os
import subprocess
import sys

import jax
import numpy as np

from ievae_jax import checkpointing, data, train_lib
from tests.conftest import REPO, tiny_train_config

# MLP classifier: these tests are about seeds sharing a program, which the sweep
# does not do with convolutions on a CPU (the launchers' default classifier is conv).
TINY = ["--num_steps=4", "--batch_size=10", "--labelled_batch_size=10", "--hidden=32",
        "--z_dim=3", "--r_dim=4", "--validation_size=100", "--log_every=2", "--eval_every=2",
        "--checkpoint_every=2", "--classifier_arch=mlp"]


def _losses(workdir):
  return [json.loads(l)["loss"] for l in open(os.path.join(workdir, "metrics.jsonl"))]


def _params(workdir):
  return jax.tree.leaves(checkpointing.load(workdir))


def test_vmapped_seeds_match_single_seed_runs(tmp_path, small_mnist_dir):
  arrays = data.load_idx(small_mnist_dir, "mnist")
  config = tiny_train_config(num_steps=4)
  together = train_lib.train_seeds(config, {0: str(tmp_path / "v0"), 3: str(tmp_path / "v3")},
                                   arrays)
  for seed in (0, 3):
    alone = train_lib.train_and_evaluate(tiny_train_config(num_steps=4, seed=seed),
                                         str(tmp_path / f"s{seed}"), arrays)
    np.testing.assert_allclose(_losses(tmp_path / f"v{seed}"), _losses(tmp_path / f"s{seed}"),
                               rtol=1e-5)
    for a, b in zip(_params(str(tmp_path / f"v{seed}")), _params(str(tmp_path / f"s{seed}"))):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-5)
    assert together[seed]["test_error"] == alone["test_error"]
    assert together[seed]["seed"] == seed and together[seed]["steps"] == 4
  # The two seeds are different runs (own labelled subset, own noise).
  assert _losses(tmp_path / "v0") != _losses(tmp_path / "v3")


def _sweep(cwd, data_dir, *args):
  env = {**os.environ, "PYTHONPATH": REPO}
  return subprocess.run([sys.executable, "-m", "experiments.sweep", f"--data_dir={data_dir}",
                         "--sweep_dir=out", *TINY, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


def test_sweep_skips_finished_runs_and_resumes_unfinished_ones(tmp_path, small_mnist_dir):
  first = _sweep(tmp_path, small_mnist_dir, "--labels=20", "--seeds=0,1")
  assert first.returncode == 0, first.stderr[-3000:]
  finished = sorted(glob.glob(str(tmp_path / "runs" / "semisup-mnist-labels20-seed*")))
  assert len(finished) == 2
  stamps = {d: os.path.getmtime(os.path.join(d, "results.json")) for d in finished}

  # Same settings plus a new label count: the finished runs are skipped, 40 labels train.
  second = _sweep(tmp_path, small_mnist_dir, "--labels=20,40", "--seeds=0,1")
  assert second.returncode == 0, second.stderr[-3000:]
  assert second.stderr.count("skipped") == 2
  assert {d: os.path.getmtime(os.path.join(d, "results.json")) for d in finished} == stamps
  summary = json.load(open(tmp_path / "out" / "sweep.json"))
  assert set(summary["results"]) == {"20", "40"}
  row = summary["results"]["40"]
  assert row["seeds"] == [0, 1] and len(row["runs"]) == 2
  errors = [r["test_error"] for r in row["runs"]]
  assert np.isclose(row["test_error_mean"], np.mean(errors))
  assert np.isclose(row["test_error_std"], np.std(errors, ddof=1))
  assert "| 40 |" in open(tmp_path / "out" / "sweep.md").read()

  # More steps: the runs are unfinished now, and resume from their step-4 checkpoints.
  third = _sweep(tmp_path, small_mnist_dir, "--labels=20", "--seeds=0,1", "--num_steps=6")
  assert third.returncode == 0, third.stderr[-3000:]
  assert third.stderr.count("Resumed from the checkpoint at step 4") == 2
  for d in finished:
    assert json.load(open(os.path.join(d, "results.json")))["steps"] == 6


def test_sweep_rejects_bad_lists(tmp_path, small_mnist_dir):
  out = _sweep(tmp_path, small_mnist_dir, "--labels=20,abc")
  assert out.returncode == 1 and "error: --labels must be a comma-separated list" in out.stderr
  out = _sweep(tmp_path, small_mnist_dir, "--labels=20", "--seeds=1,1")
  assert out.returncode == 1 and "error: --seeds must list distinct integers" in out.stderr


def test_vmapped_seeds_on_four_devices_match_one_device(tmp_path, small_mnist_dir):
  """The vmapped program shards each seed's batch over the devices (seed axis replicated)."""
  losses = {}
  for devices in (1, 4):
    cwd = tmp_path / f"d{devices}"
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": REPO,
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    out = subprocess.run([sys.executable, "-m", "experiments.sweep", f"--data_dir={small_mnist_dir}",
                          "--sweep_dir=out", *TINY, "--batch_size=12", "--labelled_batch_size=12",
                          "--labels=20", "--seeds=0,1"], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(vmapped in one program)" in out.stderr and f"{devices} device(s)" in out.stderr
    losses[devices] = [_losses(d) for d in sorted(glob.glob(str(cwd / "runs" / "semisup-*")))]
  np.testing.assert_allclose(losses[4], losses[1], rtol=1e-5)


def test_default_workdirs_of_earlier_runs_are_stable():
  """Settings added later (kl_weight, augment_shift, augment_shear, augment_elastic,
  consistency_weight, view_elastic, teacher_decay, balance_weight, vat_weight,
  vat_epsilon, generative_weight, generative_view, generative_steps, binarise,
  classifier_input, entropy_weight, entropy_anneal_steps, classifier_arch,
  classifier_dropout, matmul_dtype) leave the digest alone at their neutral values, so
  runs made before them keep their workdirs and sweeps find them.
  The name below is that of the committed 100-label sweep's seed 0 (mnist_sweep/)."""
  import dataclasses
  from experiments import common
  from ievae_jax.config import TrainConfig
  config = TrainConfig(labels=100, seed=0, num_steps=10000, lr_schedule="cosine",
                       log_every=500, eval_every=1000, data_dir="../shared/data/mnist")
  assert common.default_workdir("semisup", config) == \
      os.path.join("runs", "semisup-mnist-labels100-seed0-c972f65a")
  conv_classifier = dataclasses.replace(config.model, classifier_arch="conv")
  for changed in ({"kl_weight": 2.0}, {"augment_shift": 2}, {"augment_shear": 0.5},
                  {"augment_elastic": 34.0}, {"augment_elastic": 34.0, "consistency_weight": 1.0},
                  {"alpha": 550.0},
                  {"binarise": False}, {"classifier_input": "grey"}, {"entropy_weight": 2.0}, {"entropy_anneal_steps": 10},
                  {"augment_shift": 2, "consistency_weight": 1.0},
                  {"augment_shift": 2, "consistency_weight": 1.0, "view_elastic": 16.0},
                  {"augment_shift": 2, "consistency_weight": 1.0, "teacher_decay": 0.9},
                  {"balance_weight": 1.0},
                  {"vat_weight": 1.0}, {"vat_weight": 1.0, "vat_epsilon": 1.0},
                  {"generative_weight": 1.0},
                  {"generative_weight": 1.0, "generative_view": "reconstruction"},
                  {"generative_weight": 1.0, "generative_steps": 100},
                  {"model": conv_classifier},
                  {"model": dataclasses.replace(config.model, classifier_dropout=0.5)},
                  {"model": dataclasses.replace(config.model, matmul_dtype="bfloat16")}):
    assert common.default_workdir("semisup", dataclasses.replace(config, **changed)) != \
        common.default_workdir("semisup", config)
  consistency = dataclasses.replace(config, augment_shift=2, consistency_weight=1.0)
  assert common.default_workdir("semisup", dataclasses.replace(consistency, teacher_decay=0.9)) \
      != common.default_workdir("semisup", consistency)
  generative = dataclasses.replace(config, generative_weight=1.0)
  assert common.default_workdir("semisup", dataclasses.replace(generative, generative_steps=100)) \
      != common.default_workdir("semisup", generative)


def test_seeds_share_a_program_unless_convolutions_run_on_a_cpu():
  import dataclasses
  from experiments import common
  from tests.conftest import tiny_model_config
  mlp = tiny_train_config()
  conv_classifier = tiny_train_config(
      model=dataclasses.replace(tiny_model_config(), classifier_arch="conv"))
  assert common.default_seeds_per_program(mlp, 3) == 3
  assert common.default_seeds_per_program(conv_classifier, 3) == (
      1 if jax.default_backend() == "cpu" else 3)


def test_finished_results_needs_every_step(tmp_path):
  import json
  from experiments import common
  assert common.finished_results(str(tmp_path)) is None
  results = {"steps": 400, "flags": {"num_steps": 500}, "test_error": 0.1}
  (tmp_path / "results.json").write_text(json.dumps(results))
  assert common.finished_results(str(tmp_path)) is None          # stopped short
  assert common.finished_results(str(tmp_path), num_steps=400) == results
  results["steps"] = 500
  (tmp_path / "results.json").write_text(json.dumps(results))
  assert common.finished_results(str(tmp_path)) == results
