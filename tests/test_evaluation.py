"""The evaluation measures on cases with a known answer, and the evaluate command end to end."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from ievae_jax import evaluation, model, objective
from tests.conftest import REPO, tiny_model_config


def test_probe_on_noise_scores_chance_and_on_the_label_scores_one():
  rng = np.random.default_rng(0)
  labels_train, labels_test = rng.integers(0, 10, 3000), rng.integers(0, 10, 3000)
  noise = lambda n: rng.normal(size=(n, 8))
  probe = evaluation.fit_linear_probe(noise(3000), labels_train, 10)
  assert abs(evaluation.probe_accuracy(probe, noise(3000), labels_test) - 0.1) < 0.03
  onehot = lambda y: np.eye(10)[y] + 0.01 * rng.normal(size=(len(y), 10))
  probe = evaluation.fit_linear_probe(onehot(labels_train), labels_train, 10)
  assert evaluation.probe_accuracy(probe, onehot(labels_test), labels_test) == 1.0


def test_within_class_variance_share():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 2000)
  centres = rng.normal(size=(4, 5)) * 3
  assert evaluation.within_class_variance_share(centres[labels], labels) < 1e-12
  noisy = centres[labels] + rng.normal(size=(2000, 5))
  # Independent computation: law of total variance, between-class part from the class means.
  total = noisy.var(0).sum() * len(noisy)
  between = sum((labels == c).sum() * np.sum((noisy[labels == c].mean(0) - noisy.mean(0)) ** 2)
                for c in range(4))
  assert np.isclose(evaluation.within_class_variance_share(noisy, labels),
                    1 - between / total, rtol=1e-9)
  pure_noise = rng.normal(size=(2000, 5))
  assert evaluation.within_class_variance_share(pure_noise, labels) > 0.98


def _binary(seed, shape):
  return np.asarray(jax.random.bernoulli(jax.random.key(seed), 0.3, shape), np.float32)


@pytest.mark.parametrize("kind", ["ievae", "m2", "vae"])
def test_iw_bound_with_one_sample_averages_to_the_elbo(kind):
  params = model.init(jax.random.key(0), tiny_model_config(kind=kind))
  x = _binary(1, (3, 28, 28, 1))
  draws = 2000
  iw = evaluation.importance_weighted_bound(
      params, np.repeat(x, draws, 0), jax.random.key(2), num_samples=1).reshape(3, draws)
  eps_shape = objective.latent_noise_shape(params.config, 3 * draws, kind == "vae")
  eps = jax.random.normal(jax.random.key(3), eps_shape)
  xs = jnp.repeat(jnp.asarray(x), draws, 0)
  if kind == "vae":
    elbo = objective.vae_elbo(params, xs, eps)["elbo"]
  else:
    elbo = objective.unlabelled_bound(params, xs, eps)["bound"]
  elbo = np.asarray(elbo).reshape(3, draws)
  stderr = np.sqrt(iw.var(1) / draws + elbo.var(1) / draws)
  assert np.all(np.abs(iw.mean(1) - elbo.mean(1)) < 4 * stderr + 1e-3), (iw.mean(1), elbo.mean(1))


def test_iw_bound_grows_with_k_and_approaches_log_p_x_by_quadrature():
  """A model small enough to integrate: 2x2 images, d_z = 1, 3 classes."""
  cfg = tiny_model_config(image_shape=(2, 2, 1), num_classes=3, z_dim=1, r_dim=2, hidden=8)
  params = model.init(jax.random.key(4), cfg)
  x = _binary(5, (6, 2, 2, 1))
  x[0] = 1.0
  # log p(x) = logsumexp_y [log p(y) + log int p(x | y, z) N(z; 0, 1) dz], z on a fine grid.
  z = np.linspace(-10, 10, 20001)[:, None]
  dz = z[1, 0] - z[0, 0]
  log_normal = -0.5 * z[:, 0] ** 2 - 0.5 * np.log(2 * np.pi)
  r = np.asarray(model.class_representations(params))
  exact = []
  for image in x:
    per_class = []
    for y in range(3):
      logits = np.asarray(model.decoder_logits(params, jnp.asarray(r[y])[None], jnp.asarray(z)),
                          np.float64).reshape(len(z), -1)
      log_lik = np.sum(image.reshape(-1) * logits - np.logaddexp(0, logits), axis=1)
      per_class.append(np.log(1 / 3) + special.logsumexp(log_lik + log_normal) + np.log(dz))
    exact.append(special.logsumexp(per_class))
  exact = np.array(exact)
  means = []
  for k in (1, 10, 100, 3000):
    reps = 4000 // k if k < 3000 else 2
    bound = evaluation.importance_weighted_bound(
        params, np.repeat(x, reps, 0), jax.random.key(k), num_samples=k).reshape(6, reps)
    means.append(bound.mean())
  assert means[0] < means[1] < means[2] <= means[3] + 1e-3, means
  # k = 1 is the ELBO, strictly below log p(x); k = 3000 is within Monte Carlo noise of it.
  assert means[0] < exact.mean() - 0.05
  assert abs(exact.mean() - means[3]) < 0.01, (means, exact.mean())


def test_transfer_accuracy_bookkeeping():
  params = model.init(jax.random.key(0), tiny_model_config())
  images = np.zeros((7, 28, 28, 1), np.uint8)
  labels = np.array([0, 1, 2, 4, 5, 6, 7])   # never 3
  always_three = lambda x: np.full(len(x), 3)
  out = evaluation.transfer_accuracy(params, images, labels, always_three, batch_size=4)
  assert np.isclose(out["transfer_accuracy"], 1 / 9)
  assert out["per_target_class"][3] == 1.0 and sum(out["per_target_class"]) == 1.0


def test_transfers_keep_z_and_change_only_the_class():
  params = model.init(jax.random.key(0), tiny_model_config())
  images = np.asarray(jax.random.randint(jax.random.key(1), (2, 28, 28, 1), 0, 256), np.uint8)
  drawn = evaluation.transfers(params, images, np.array([1, 2]), 10)
  x = images.astype(np.float32) / 255
  z = model.encode_equivariant(params, jnp.asarray(x), jnp.array([1, 2])).mean()
  expected = model.generate(params, jnp.array([5, 5]), z).mean()
  np.testing.assert_allclose(drawn[:, 5], expected, atol=1e-5)


def _run(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=600)


@pytest.mark.parametrize("kind", ["ievae", "vae"])
def test_evaluate_command_on_a_tiny_trained_run(tmp_path, small_mnist_dir, kind):
  workdir = str(tmp_path / "run")
  train = _run("experiments.mnist_semisup", f"--model={kind}", "--labels=20", "--num_steps=4",
               "--batch_size=10", "--labelled_batch_size=10", "--hidden=32", "--z_dim=2",
               "--r_dim=4", "--validation_size=100", f"--data_dir={small_mnist_dir}",
               f"--workdir={workdir}")
  assert train.returncode == 0, train.stderr[-3000:]
  out = _run("experiments.evaluate", f"--workdir={workdir}", f"--data_dir={small_mnist_dir}",
             "--iw_samples=20", "--iw_examples=30", "--transfer_examples=30",
             "--reference_steps=20", f"--reference_classifier_dir={tmp_path / 'reference'}")
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.load(open(os.path.join(workdir, "eval.json")))
  assert results["model"] == kind and results["iw_examples"] == 30
  assert 0 <= results["z_probe_accuracy"] <= 1 and results["iw_log_likelihood"] < 0
  figures = set(os.listdir(os.path.join(workdir, "figures")))
  assert {"reconstructions.png", "embeddings.png", "traversal.png"} <= figures
  if kind == "ievae":
    assert 0 <= results["test_error"] <= 1 and 0 <= results["transfer_accuracy"] <= 1
    assert 0 <= results["r_within_class_variance_share"] <= 1
    assert "class_swap.png" in figures
    assert os.path.exists(tmp_path / "reference" / "params.msgpack")
  else:
    assert results["test_error"] is None and results["transfer_accuracy"] is None


def test_evaluate_refuses_a_directory_that_is_not_a_run(tmp_path):
  out = _run("experiments.evaluate", f"--workdir={tmp_path}")
  assert out.returncode == 1
  assert out.stderr.strip().startswith("error:") and "not a run directory" in out.stderr


def test_confusion_summary_counts_each_true_predicted_pair():
  labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
  predictions = np.array([0, 0, 1, 1, 1, 2, 1, 1, 0, 2])
  summary = evaluation.confusion_summary(labels, predictions, 3, top=2)
  assert summary["error"] == np.mean(labels != predictions)
  # per true class: 1 of 3 zeros wrong, no ones wrong, 3 of 5 twos wrong
  np.testing.assert_allclose(summary["per_class_error"], [1 / 3, 0.0, 3 / 5])
  assert summary["top_confusions"][0] == {"true": 2, "predicted": 1, "count": 2}
  assert summary["top_confusions"][1]["count"] == 1
  # predicted shares 0.3 / 0.5 / 0.2 against true shares 0.3 / 0.2 / 0.5
  assert abs(summary["share_kl"] - (0.5 * np.log(0.5 / 0.2) + 0.2 * np.log(0.2 / 0.5))) < 1e-12
  assert evaluation.confusion_summary(labels, labels, 3)["share_kl"] == 0.0
  # Fewer confusions than asked for: the ones that never occur are not listed.
  few = evaluation.confusion_summary(np.array([0, 1, 1]), np.array([0, 1, 0]), 3, top=5)
  assert few["top_confusions"] == [{"true": 1, "predicted": 0, "count": 1}]
  assert few["per_class_error"] == [0.0, 0.5, None]   # no example of class 2
  assert evaluation.confusion_summary(np.array([0, 1]), np.array([0, 2]), 3)["share_kl"] is None


def test_unlabelled_bound_matches_a_per_class_loop_and_ignores_batching():
  """U(x) = sum_y q(y|x) [log p(x|y,z_y) - KL(q(z|x,r_y) || N(0, I)) + log p(y)] + H(q(y|x)),
  computed here class by class with the Bernoulli and Gaussian formulas written out."""
  params = model.init(jax.random.key(0), tiny_model_config())
  x = _binary(1, (7, 28, 28, 1))                        # 7: not a multiple of the batch size
  key = jax.random.key(2)
  got = evaluation.unlabelled_bound(params, x, key, batch_size=3)
  k = params.config.num_classes
  eps = np.asarray(jax.random.normal(key, (7, k, params.config.z_dim)))
  q_y = np.asarray(jax.nn.softmax(model.classify(params, x), -1))
  r = np.asarray(model.class_representations(params))
  expected = -np.sum(q_y * np.log(q_y), -1)
  flat = x.reshape(7, -1)
  for y in range(k):
    posterior = model.equivariant_posterior(params, x, np.repeat(r[y:y + 1], 7, 0))
    mean, scale = np.asarray(posterior.mean()), np.asarray(posterior.stddev())
    z = mean + scale * eps[:, y]
    logits = np.asarray(model.decoder_logits(params, np.repeat(r[y:y + 1], 7, 0), z))
    logits = logits.reshape(7, -1).astype(np.float64)
    log_p_x = np.sum(flat * -np.logaddexp(0, -logits) + (1 - flat) * -np.logaddexp(0, logits), -1)
    kl = 0.5 * np.sum(mean ** 2 + scale ** 2 - 1 - 2 * np.log(scale), -1)
    expected += q_y[:, y] * (log_p_x - kl + np.log(1 / k))
  np.testing.assert_allclose(got, expected, rtol=1e-4)


@pytest.mark.parametrize("routing", ["conditional", "strict"])
def test_class_elbos_match_the_labelled_elbo_of_each_class(routing):
  """L(x, y) for all K at once equals objective.labelled_elbo run once per class with
  the same z noise (the strict routing draws one z for all K)."""
  params = model.init(jax.random.key(0), tiny_model_config(routing=routing))
  x = _binary(1, (5, 28, 28, 1))
  key = jax.random.key(2)
  got = evaluation.class_elbos(params, x, key, batch_size=2)
  k = params.config.num_classes
  eps = jax.random.normal(key, objective.latent_noise_shape(params.config, 5, labelled=False))
  assert got.shape == (5, k)
  for y in range(k):
    eps_y = eps[:, y] if eps.ndim == 3 else eps
    want = objective.labelled_elbo(params, jnp.asarray(x), jnp.full((5,), y), eps_y)["elbo"]
    np.testing.assert_allclose(got[:, y], want, rtol=1e-5)


def test_generative_predictions_take_the_class_that_explains_x_best(monkeypatch):
  """With L(x, y) replaced by a known table, the prediction is its argmax after
  averaging over the draws, and each draw sees a fresh binarisation of the image."""
  images = np.full((3, 28, 28, 1), 128, np.uint8)
  seen = []
  tables = [np.array([[0., 5, 1], [2, 0, 0], [0, 0, 3]]),
            np.array([[0., -9, 1], [0, 0, 1], [0, 0, 3]])]

  def fake_class_elbos(params, binary, key):
    seen.append(binary)
    return tables[len(seen) - 1]

  monkeypatch.setattr(evaluation, "class_elbos", fake_class_elbos)
  got = evaluation.generative_predictions(None, images, jax.random.key(0), num_draws=2)
  np.testing.assert_array_equal(got, [2, 0, 2])      # summed table: [0,-4,2], [2,0,1], [0,0,6]
  assert all(set(np.unique(b)) == {0.0, 1.0} for b in seen)
  assert not np.array_equal(seen[0], seen[1])


def test_ink_slant_is_zero_upright_and_the_shear_of_a_leaning_stroke():
  images = np.zeros((3, 28, 28, 1), np.uint8)
  rows = np.arange(4, 24)
  images[0, rows, 14, 0] = 255                                   # upright
  images[1, rows, np.round(14 + 0.5 * (14 - rows)).astype(int), 0] = 255   # top leans right
  images[2, rows, np.round(14 - 0.25 * (14 - rows)).astype(int), 0] = 255  # leans left
  slant = evaluation.ink_slant(images)
  assert abs(slant[0]) < 1e-12
  assert slant[1] == pytest.approx(0.5, abs=0.02) and slant[2] == pytest.approx(-0.25, abs=0.02)


def test_save_confusions_rows_are_labelled_misread_and_right_images_of_the_true_class(
    tmp_path, monkeypatch):
  from ievae_jax import figures
  rng = np.random.default_rng(0)
  labels = np.array([1, 1, 1, 7, 7, 2])
  predictions = np.array([8, 8, 1, 9, 7, 2])
  images = rng.integers(1, 256, (6, 28, 28, 1), dtype=np.uint8)
  labelled = rng.integers(1, 256, (3, 28, 28, 1), dtype=np.uint8)
  drawn = {}
  monkeypatch.setattr(figures, "save_grid", lambda grid, path, title, row_labels: drawn.update(
      grid=grid, rows=row_labels))
  confusions = evaluation.confusion_summary(labels, predictions, 10)["top_confusions"][:2]
  figures.save_confusions(confusions, labelled, np.array([1, 7, 1]), images, labels,
                          predictions, str(tmp_path / "c.png"), "t", per_row=4)
  assert drawn["rows"] == ["labelled 1s", "1s read as 8", "1s read right",
                           "labelled 7s", "7s read as 9", "7s read right"]
  grid = drawn["grid"]
  assert grid.shape == (6, 4, 28, 28, 1)
  np.testing.assert_allclose(grid[0, :2], labelled[[0, 2]] / 255.0)
  np.testing.assert_allclose(grid[1, :2], images[[0, 1]] / 255.0)
  np.testing.assert_allclose(grid[2, :1], images[[2]] / 255.0)
  np.testing.assert_allclose(grid[3, :1], labelled[[1]] / 255.0)
  np.testing.assert_allclose(grid[4, :1], images[[3]] / 255.0)
  np.testing.assert_allclose(grid[5, :1], images[[4]] / 255.0)
  assert not grid[2, 1:].any() and not grid[4, 1:].any()   # blanks pad the short rows


def test_save_confusions_writes_a_png(tmp_path):
  from ievae_jax import figures
  images = np.full((2, 28, 28, 1), 200, np.uint8)
  figures.save_confusions([{"true": 1, "predicted": 8}], images[:1], np.array([1]), images,
                          np.array([1, 1]), np.array([8, 1]), str(tmp_path / "c.png"), "t",
                          per_row=3)
  with open(tmp_path / "c.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
