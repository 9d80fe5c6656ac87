"""Benchmark helpers that turn run logs into reported numbers."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks import throughput
from experiments import common
from ievae_jax import checkpointing
from tests.conftest import REPO


def test_parallel_runs_do_not_each_preallocate_most_of_a_gpu():
  user = {"PATH": "/bin", "XLA_PYTHON_CLIENT_PREALLOCATE": "true"}
  assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in common.child_environment(1, {"A": "1"})
  assert common.child_environment(4, {"A": "1"}) == {
      "A": "1", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  assert common.child_environment(4, user) == user   # the user's choice stands


def test_time_to_error_is_the_first_validation_check_at_or_below_each_target(tmp_path):
  checks = [(1000, 120.0, 0.09), (2000, 250.0, 0.05), (3000, 390.0, 0.052), (4000, 500.0, 0.04)]
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write(json.dumps({"step": 500, "elapsed_s": 60.0, "loss": 1.0}) + "\n")
    for step, elapsed, error in checks:
      f.write(json.dumps({"step": step, "elapsed_s": elapsed, "validation_error": error}) + "\n")
  with open(tmp_path / "results.json", "w") as f:
    json.dump({"test_error": 0.045, "validation_error": 0.04, "steps": 4000,
               "wall_seconds": 510.0}, f)
  row = throughput.time_to_error(str(tmp_path))
  assert row["seconds_to_5%"] == 250.0          # 0.05 counts as reached
  assert row["steps_to_5%"] == 2000
  assert row["seconds_to_3.33%"] is None        # never reached
  assert row["steps_to_3.33%"] is None
  assert row["best_validation_error"] == 0.04
  assert row["final_test_error"] == 0.045


def test_throughput_drops_bfloat16_on_a_cpu_without_avx512_bf16_unless_asked_by_name():
  both = ["float32", "bfloat16"]
  avx2, bf16 = ["avx", "avx2", "fma"], ["avx", "avx2", "fma", "avx512f", "avx512_bf16"]
  dtypes, why = throughput.dtypes_for_this_machine(both, False, "cpu", avx2)
  assert dtypes == ["float32"] and "AVX512-BF16" in why and "--matmul_dtypes" in why
  assert throughput.dtypes_for_this_machine(both, True, "cpu", avx2) == (both, None)
  assert throughput.dtypes_for_this_machine(both, False, "cpu", bf16) == (both, None)
  assert throughput.dtypes_for_this_machine(both, False, "gpu", avx2) == (both, None)
  assert throughput.dtypes_for_this_machine(both, False, "cpu", None) == (both, None)


def test_step_ab_exports_the_baseline_as_a_separate_package(tmp_path, monkeypatch):
  """The baseline commit's package imports under its own name, with no import left that
  reaches back into the working tree's ievae_jax."""
  import importlib
  import ievae_jax.model
  from benchmarks import step_ab
  monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(step_ab.__file__))))
  step_ab.export_baseline("HEAD", str(tmp_path))
  sources = [p.read_text() for p in (tmp_path / step_ab.ALIAS).rglob("*.py")]
  assert sources and all("ievae_jax" not in s.replace(step_ab.ALIAS, "") for s in sources)
  monkeypatch.syspath_prepend(str(tmp_path))
  try:
    baseline_model = importlib.import_module(f"{step_ab.ALIAS}.model")
    assert baseline_model is not ievae_jax.model
    assert baseline_model.__file__.startswith(str(tmp_path))
    assert baseline_model.distributions.__name__ == f"{step_ab.ALIAS}.distributions"
  finally:
    for name in [m for m in sys.modules if m.startswith(step_ab.ALIAS)]:
      del sys.modules[name]


def test_option_cost_starts_from_the_launchers_defaults():
  """The benchmark's baseline step is the one `python -m experiments.mnist_semisup` trains."""
  import dataclasses
  from absl import flags
  from experiments import common, mnist_semisup  # pylint: disable=unused-import
  from benchmarks import option_cost
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["mnist_semisup"])
  launcher = dataclasses.replace(common.config_from_flags(supervised=False), data_dir=None)
  assert option_cost.launcher_defaults() == launcher


def test_option_cost_variants_change_only_their_own_settings():
  import dataclasses
  import pytest
  from benchmarks import option_cost
  def flat(config):   # TrainConfig fields and its ModelConfig's, side by side
    fields = dataclasses.asdict(config)
    return {**fields.pop("model"), **fields}

  defaults = flat(option_cost.variant_config("defaults"))
  for name, settings in option_cost.VARIANTS.items():
    changed = {k: v for k, v in flat(option_cost.variant_config(name)).items()
               if defaults[k] != v}
    assert changed == settings, name
  assert option_cost.variant_config("arch_conv").model.arch == "conv"
  with pytest.raises(ValueError, match="Unknown variant 'gray'"):
    option_cost.variant_config("gray")


def test_option_cost_times_each_variant_against_the_defaults(tmp_path, capsys):
  import pytest
  from absl.testing import flagsaver
  from benchmarks import option_cost
  output = tmp_path / "cost.json"
  with flagsaver.flagsaver(variants=["grey"], windows=2, steps_per_window=1,
                           cost_output=str(output)):
    option_cost.main([])
  result = json.loads(output.read_text())
  assert sorted(result["variants"]) == ["defaults", "grey"]
  assert result["variants"]["defaults"]["relative_cost"] == 1.0
  grey = result["variants"]["grey"]
  assert grey["settings"] == {"classifier_input": "grey"}
  assert len(grey["window_ms"]) == 2 and all(t > 0 for t in grey["window_ms"])
  assert grey["relative_cost"] == pytest.approx(
      grey["ms_per_step"] / result["variants"]["defaults"]["ms_per_step"], rel=1e-12)
  assert "grey" in capsys.readouterr().out


def test_profile_step_sums_op_time_and_names_each_op_from_the_hlo(tmp_path):
  import gzip
  from benchmarks import profile_step
  events = [{"ph": "X", "name": "conv.2", "dur": 300}, {"ph": "X", "name": "conv.2", "dur": 100},
            {"ph": "X", "name": "fusion.7", "dur": 50},
            {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 900},  # bookkeeping
            {"ph": "i", "name": "fusion.7"}]                            # not a span
  trace = tmp_path / "perfetto_trace.json.gz"
  with gzip.open(trace, "wt") as f:
    json.dump({"traceEvents": events}, f)
  assert profile_step.op_durations(str(trace)) == {"conv.2": 400, "fusion.7": 50}
  hlo = ('  %conv.2 = f32[64,5,5,32]{3,2,1,0} convolution(%a, %b), '
         'metadata={op_name="jit(f)/transpose(jvp(Decoder))/conv_general_dilated"}\n')
  assert profile_step.describe("conv.2", hlo) == {
      "shape": "f32[64,5,5,32]{3,2,1,0}",
      "jax_op": "jit(f)/transpose(jvp(Decoder))/conv_general_dilated"}
  assert profile_step.describe("conv.20", hlo) == {}


def test_minimal_step_loss_is_our_objective_written_independently():
  """The hand-written J of benchmarks.minimal_step equals objective.loss on the same
  weights, images and key, so the two steps it times do the same computation."""
  import jax
  import jax.numpy as jnp
  from benchmarks import minimal_step
  from ievae_jax import config as config_lib, model, objective
  params = model.init(jax.random.key(1), config_lib.ModelConfig(kind="ievae", z_dim=8))
  k_l, k_u, k_y, k_z = jax.random.split(jax.random.key(2), 4)
  x_l = jax.random.bernoulli(k_l, 0.3, (6, 28, 28, 1)).astype(jnp.float32)
  x_u = jax.random.bernoulli(k_u, 0.3, (5, 28, 28, 1)).astype(jnp.float32)
  y_l = jax.random.randint(k_y, (6,), 0, 10)
  ours, _ = objective.loss(params, {"image": x_l, "label": y_l}, {"image": x_u}, k_z,
                           minimal_step.ALPHA)
  minimal = minimal_step.loss(minimal_step.weights_from_params(params), x_l.reshape(6, -1),
                              y_l, x_u.reshape(5, -1), k_z)
  assert abs(float(ours) - float(minimal)) <= 1e-5 * abs(float(ours)), (ours, minimal)


def test_semisup_benchmark_passes_sigterm_to_its_run_and_starts_no_more(tmp_path,
                                                                        small_mnist_dir):
  """SIGTERM to the wrapper reaches the training run in progress, which saves its
  checkpoint and exits; the seed queued behind it is never started; the wrapper says how
  to resume and exits 128 + SIGTERM."""
  root = tmp_path / "runs"
  tiny = ["--num_steps=100000", "--batch_size=10", "--labelled_batch_size=10", "--hidden=32",
          "--z_dim=3", "--r_dim=4", "--validation_size=100", "--eval_every=100000",
          "--checkpoint_every=50"]
  wrapper = subprocess.Popen(
      [sys.executable, "-m", "benchmarks.mnist_semisup", "--labels=20", "--seeds=0,1",
       "--tag=t", "--supervised_steps=0", f"--root={root}", f"--data_dir={small_mnist_dir}",
       "--", *tiny], cwd=REPO, stderr=subprocess.PIPE, text=True)
  first, second = root / "semisup20-seed0-t", root / "semisup20-seed1-t"
  deadline = time.time() + 240
  while not (first / "checkpoints" / "50").is_dir() and time.time() < deadline:
    assert wrapper.poll() is None, wrapper.stderr.read()[-3000:]
    time.sleep(0.05)
  wrapper.send_signal(signal.SIGTERM)
  _, stderr = wrapper.communicate(timeout=120)
  assert wrapper.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  assert "Rerun the same command to resume" in stderr
  log = (root / "semisup20-seed0-t.log").read_text()
  assert "Stopped by SIGTERM after step" in log
  saved = int(log.split("Stopped by SIGTERM after step ")[1].split(";")[0])
  assert checkpointing.manager(str(first)).latest_step() == saved >= 50
  assert not os.path.exists(second) and not os.path.exists(f"{second}.log")


def test_semisup_benchmark_reuses_reported_seeds_of_the_same_setting_only(tmp_path,
                                                                          small_mnist_dir):
  """A seed found in a --reuse output is not trained again and enters the mean as
  reported; an output of another setting is refused, naming the setting that differs."""
  root, tiny = tmp_path / "runs", ["--num_steps=20", "--batch_size=10",
                                   "--labelled_batch_size=10", "--hidden=32", "--z_dim=3",
                                   "--r_dim=4", "--validation_size=100", "--eval_every=10"]
  def wrapper(seeds, output, *reuse):
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.mnist_semisup", "--labels=20", f"--seeds={seeds}",
         "--tag=t", "--supervised_steps=0", f"--root={root}", f"--data_dir={small_mnist_dir}",
         f"--output={output}", *[f"--reuse={path}" for path in reuse], "--", *tiny],
        cwd=REPO, capture_output=True, text=True, timeout=300)
  trained = wrapper("0", tmp_path / "seed0.json")
  assert trained.returncode == 0, trained.stderr[-3000:]
  seed0 = json.loads((tmp_path / "seed0.json").read_text())
  # The machine sits at the top level, as in the other timing JSONs.
  assert seed0["cpu_count"] == os.cpu_count() and "cpu_model" in seed0
  earlier = dict(seed0, per_seed=[dict(seed0["per_seed"][0], seed=1, test_error=0.5)])
  (tmp_path / "earlier.json").write_text(json.dumps(earlier))

  both = wrapper("0,1", tmp_path / "both.json", tmp_path / "earlier.json")
  assert both.returncode == 0, both.stderr[-3000:]
  summary = json.loads((tmp_path / "both.json").read_text())
  assert [s["test_error"] for s in summary["per_seed"]] == [seed0["test_error"], 0.5]
  assert summary["test_error"] == pytest.approx((seed0["test_error"] + 0.5) / 2, rel=1e-12)
  assert not (root / "semisup20-seed1-t").exists()
  assert "Seed 1 is reported as in" in summary["note"]

  other = dict(earlier, flags=dict(earlier["flags"], alpha=1.0))
  (tmp_path / "other.json").write_text(json.dumps(other))
  refused = wrapper("0,1", tmp_path / "refused.json", tmp_path / "other.json")
  assert refused.returncode != 0 and "differ in alpha;" in refused.stderr
  assert not (tmp_path / "refused.json").exists()


def test_validation_curves_reads_each_runs_checks_and_names_a_missing_run(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  records = [{"step": 500, "loss": 1.0}, {"step": 1000, "validation_error": 0.25},
             {"step": 2000, "validation_error": 0.125}]
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  def curves(*runs, metrics=None):
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.validation_curves", f"--runs={','.join(runs)}",
         f"--output={tmp_path / 'out.json'}"] + ([f"--metrics={metrics}"] if metrics else []),
        cwd=REPO, capture_output=True, text=True, timeout=120)
  done = curves(f"a={run}")
  assert done.returncode == 0, done.stderr[-3000:]
  written = json.loads((tmp_path / "out.json").read_text())
  assert written["a"]["validation_error"] == {"1000": 0.25, "2000": 0.125}
  assert "teacher_validation_error" not in written["a"]
  taught = tmp_path / "taught"
  taught.mkdir()
  (taught / "metrics.jsonl").write_text(json.dumps(
      {"step": 1000, "validation_error": 0.25, "teacher_validation_error": 0.5}) + "\n")
  done = curves(f"a={run}", f"t={taught}")
  assert done.returncode == 0, done.stderr[-3000:]
  written = json.loads((tmp_path / "out.json").read_text())
  assert written["t"]["teacher_validation_error"] == {"1000": 0.5}
  assert "| step | a | t | t teacher |" in done.stdout
  assert "| 1000 | 0.2500 | 0.2500 | 0.5000 |" in done.stdout
  done = curves(f"a={run}", metrics="loss")
  assert done.returncode == 0, done.stderr[-3000:]
  written = json.loads((tmp_path / "out.json").read_text())
  assert written["a"]["loss"] == {"500": 1.0}
  assert "| step | a |" in done.stdout and "| 500 |" not in done.stdout
  unlogged = curves(f"a={run}", metrics="class_balance")
  assert unlogged.returncode != 0 and "logged no 'class_balance'" in unlogged.stderr

  missing = curves(f"a={run}", f"b={tmp_path / 'gone'}")
  assert missing.returncode != 0 and "has no metrics.jsonl" in missing.stderr
  malformed = curves(str(run))
  assert malformed.returncode != 0 and "is not name=workdir" in malformed.stderr


def test_generative_view_statistics_match_the_public_api():
  """evaluation.generative_view_statistics on the grey transfer view: the share of views
  the classifier reads as y_hat, and as the label, recomputed batch by batch with
  `generate` and `encode_equivariant`; the binary draw gives rates of the same kind."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from ievae_jax import evaluation, model
  from tests.conftest import tiny_model_config
  params = model.init(jax.random.key(0), tiny_model_config())
  rng = np.random.default_rng(0)
  images = (rng.random((12, 28, 28, 1)) < 0.3).astype(np.float32)
  labels = rng.integers(0, 10, 12)
  got = evaluation.generative_view_statistics(params, images, labels, jax.random.key(1),
                                              "transfer", batch_size=5, grey_view=True)
  y_hat = np.argmax(np.asarray(model.classify(params, images)), axis=-1)
  read = []
  for i in range(0, 12, 5):    # the z of the image before, within each batch
    x, y = images[i:i + 5], y_hat[i:i + 5]
    z = jnp.roll(model.encode_equivariant(params, x).mean(), 1, axis=0)
    read.append(np.argmax(np.asarray(model.classify(params, model.generate(params, y, z).mean())),
                          axis=-1))
  read = np.concatenate(read)
  assert got["view_reads_as_y_hat"] == pytest.approx(np.mean(read == y_hat))
  assert got["view_reads_as_label"] == pytest.approx(np.mean(read == labels))
  assert got["y_hat_error"] == pytest.approx(np.mean(y_hat != labels))
  assert got["kl"] >= 0
  drawn = evaluation.generative_view_statistics(params, images, labels, jax.random.key(1),
                                                "reconstruction", batch_size=5)
  assert 0 <= drawn["view_reads_as_y_hat"] <= 1 and drawn["y_hat_error"] == got["y_hat_error"]


def test_machine_description_reads_the_first_processors_model_and_extensions(tmp_path):
  from benchmarks import machine
  cpuinfo = ("processor\t: 0\nmodel name\t: AMD EPYC 9B14\n"
             "flags\t\t: fpu sse2 avx fma avx2 avx512f avx512_bf16 avx512vl\n\n"
             "processor\t: 1\nmodel name\t: Something Else\nflags\t\t: fpu sse2\n")
  path = tmp_path / "cpuinfo"
  path.write_text(cpuinfo)
  described = machine.describe(str(path))
  assert described["cpu_model"] == "AMD EPYC 9B14"
  assert described["cpu_vector_extensions"] == ["avx", "avx2", "fma", "avx512f", "avx512_bf16"]
  assert described["cpu_count"] == os.cpu_count()
  assert machine.parse_cpuinfo("flags\t: sse2 avx\n")["cpu_vector_extensions"] == ["avx"]
  missing = machine.describe(str(tmp_path / "absent"))
  assert missing["cpu_model"] is None and missing["cpu_vector_extensions"] is None


def test_view_averaging_averages_probabilities():
  """The averaged error sums probabilities (not logits); with the image as its only view
  it is the error training reports. (Its translations: test_augmentation.py.)"""
  import jax
  import numpy as np
  from benchmarks import view_averaging
  from ievae_jax import evaluation, model
  from tests.conftest import tiny_model_config
  rng = np.random.default_rng(0)
  # Two views of one image: the first sure of class 0, the second leaning to class 1.
  # Their probabilities sum to class 0 (1.0 + 0.4 against 0.0 + 0.6).
  views = {"a": np.array([[1.0, 0.0]]), "b": np.array([[0.4, 0.6]])}
  assert view_averaging.averaged_error(lambda v: views[v], ["a", "b"], np.array([0])) == 0.0
  assert view_averaging.averaged_error(lambda v: views[v], ["b"], np.array([0])) == 1.0
  params = model.init(jax.random.key(0), tiny_model_config())
  digits = (rng.random((30, 28, 28, 1)) * 255).astype(np.uint8)
  labels = rng.integers(0, 10, 30)
  errors = view_averaging.view_set_errors(params, digits, labels, jax.random.key(1), 2, 0.25, 3)
  assert errors["plain"] == pytest.approx(evaluation.classification_error(params, digits, labels))
  assert set(errors) == {"plain", "shift1", "slant", "shift1_slant", "random",
                         "random_binarised", "binarised"}
  assert all(0.0 <= e <= 1.0 for e in errors.values())
