"""The objective against independent computations (numpy, Monte Carlo, per-class loops)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ievae_jax import distributions, model, objective
from tests.conftest import tiny_model_config

K = 10


def _params(routing="conditional", seed=0):
  return model.init(jax.random.key(seed), tiny_model_config(routing=routing))


def _binary_images(n, seed=1):
  return jnp.asarray(np.random.default_rng(seed).random((n, 28, 28, 1)) < 0.3, jnp.float32)


def _np_gauss_kl(mean, scale):
  """KL(N(mean, scale^2) || N(0, 1)) summed over the last axis, in numpy."""
  return np.sum(0.5 * (mean ** 2 + scale ** 2 - 1.0) - np.log(scale), axis=-1)


def _np_bernoulli_log_prob(logits, x):
  """sum over pixels of log Bernoulli(x; sigmoid(logits)), in float64 numpy."""
  logits = np.asarray(logits, np.float64)
  log_p1 = -np.logaddexp(0.0, -logits)
  log_p0 = -np.logaddexp(0.0, logits)
  return np.sum(x * log_p1 + (1 - x) * log_p0, axis=(-3, -2, -1))


def test_gaussian_kl_matches_closed_form_and_monte_carlo():
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(4, 3)).astype(np.float32)
  scale = rng.uniform(0.3, 2.0, size=(4, 3)).astype(np.float32)
  kl = np.asarray(distributions.latent_posterior(mean, scale).kl_divergence(
      distributions.latent_prior(3)))
  np.testing.assert_allclose(kl, _np_gauss_kl(mean, scale), rtol=1e-5)
  # Monte Carlo: E_q[log q(z) - log p(z)] with 400k samples per row.
  z = mean[:, None] + scale[:, None] * rng.normal(size=(4, 400_000, 3))
  log_q = np.sum(-0.5 * ((z - mean[:, None]) / scale[:, None]) ** 2 - np.log(scale[:, None])
                 - 0.5 * np.log(2 * np.pi), -1)
  log_p = np.sum(-0.5 * z ** 2 - 0.5 * np.log(2 * np.pi), -1)
  monte_carlo = np.mean(log_q - log_p, axis=1)
  np.testing.assert_allclose(kl, monte_carlo, atol=0.03)


@pytest.mark.parametrize("routing", ["conditional", "strict"])
def test_labelled_elbo_matches_numpy(routing):
  params = _params(routing)
  x = _binary_images(6)
  y = jnp.array([0, 1, 2, 3, 4, 9])
  eps = jax.random.normal(jax.random.key(3), (6, params.config.z_dim))
  got = objective.labelled_elbo(params, x, y, eps)

  # Independent: the networks' raw outputs, then numpy for every density.
  r = np.asarray(model.class_representations(params))[np.asarray(y)]
  encoder_r = None if routing == "strict" else jnp.asarray(r)
  mean, scale = model._apply(params, "equivariant_encoder", x, encoder_r)
  mean, scale = np.asarray(mean), np.asarray(scale)
  z = mean + scale * np.asarray(eps)
  logits = model._apply(params, "decoder", jnp.asarray(r), jnp.asarray(z))
  expected_rec = _np_bernoulli_log_prob(logits, np.asarray(x))
  expected_kl = _np_gauss_kl(mean, scale)
  expected = expected_rec - expected_kl - np.log(K)
  np.testing.assert_allclose(got["reconstruction"], expected_rec, rtol=1e-5)
  np.testing.assert_allclose(got["kl"], expected_kl, rtol=1e-5)
  np.testing.assert_allclose(got["elbo"], expected, rtol=1e-5)


@pytest.mark.parametrize("routing", ["conditional", "strict"])
def test_unlabelled_bound_is_the_explicit_sum_over_classes(routing):
  params = _params(routing)
  x = _binary_images(5)
  shape = objective.latent_noise_shape(params.config, 5, labelled=False)
  eps = jax.random.normal(jax.random.key(4), shape)
  got = objective.unlabelled_bound(params, x, eps)

  # One class at a time, through the labelled ELBO, with the same noise.
  per_class = []
  for k in range(K):
    eps_k = eps if routing == "strict" else eps[:, k]
    per_class.append(np.asarray(objective.labelled_elbo(params, x, jnp.full(5, k), eps_k)["elbo"]))
  per_class = np.stack(per_class, axis=1)                                    # (B, K)
  logits = np.asarray(model.classify(params, x), np.float64)
  q = np.exp(logits - logits.max(1, keepdims=True))
  q /= q.sum(1, keepdims=True)
  entropy = -np.sum(q * np.log(q), axis=1)
  expected = np.sum(q * per_class, axis=1) + entropy
  np.testing.assert_allclose(got["class_elbo"], per_class, rtol=1e-5)
  np.testing.assert_allclose(got["entropy"], entropy, rtol=1e-4)
  np.testing.assert_allclose(got["bound"], expected, rtol=1e-5)


def _np_log_softmax(logits):
  """log q(y | x) from logits (B, K), in float64 numpy."""
  logits = np.asarray(logits, np.float64)
  return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


def _labelled_and_unlabelled(labels):
  """Four labelled images with these labels, then four unlabelled ones."""
  x = _binary_images(8)
  return {"image": x[:4], "label": jnp.array(labels)}, {"image": x[4:]}


def _loss_without_and_with(**extra):
  """objective.loss at its defaults and with `extra` set, on the same weights, batches
  and key. Returns params, the unlabelled batch, the key, and two (loss, metrics)."""
  params = _params()
  labelled, unlabelled = _labelled_and_unlabelled([0, 2, 4, 6])
  key = jax.random.key(9)
  plain = objective.loss(params, labelled, unlabelled, key, alpha=2.0)
  changed = objective.loss(params, labelled, unlabelled, key, alpha=2.0, **extra)
  return params, unlabelled, key, plain, changed


def test_alpha_weights_the_mean_labelled_cross_entropy():
  params = _params()
  labelled, unlabelled = _labelled_and_unlabelled([1, 3, 5, 7])
  key = jax.random.key(7)
  base, _ = objective.loss(params, labelled, unlabelled, key, alpha=0.0)
  weighted, metrics = objective.loss(params, labelled, unlabelled, key, alpha=37.5)
  log_q = _np_log_softmax(model.classify(params, labelled["image"]))
  cross_entropy = -np.mean(log_q[np.arange(4), [1, 3, 5, 7]])
  np.testing.assert_allclose(float(weighted) - float(base), 37.5 * cross_entropy, rtol=1e-4)
  np.testing.assert_allclose(metrics["cross_entropy"], cross_entropy, rtol=1e-5)


def test_loss_is_minus_mean_elbo_minus_mean_bound():
  params = _params()
  x = _binary_images(8)
  labelled = {"image": x[:4], "label": jnp.array([0, 2, 4, 6])}
  key = jax.random.key(11)
  total, metrics = objective.loss(params, labelled, {"image": x[4:]}, key, alpha=0.0)
  np.testing.assert_allclose(total, -metrics["labelled_elbo"] - metrics["unlabelled_bound"],
                             rtol=1e-6)
  supervised, supervised_metrics = objective.loss(params, labelled, None, key, alpha=0.0)
  np.testing.assert_allclose(supervised, -supervised_metrics["labelled_elbo"], rtol=1e-6)
  assert "unlabelled_bound" not in supervised_metrics


def test_m2_uses_the_one_hot_class_and_the_same_bound():
  params = model.init(jax.random.key(0), tiny_model_config(kind="m2"))
  np.testing.assert_array_equal(model.class_representations(params), np.eye(K))
  x = _binary_images(4)
  eps = jax.random.normal(jax.random.key(5), (4, K, params.config.z_dim))
  got = objective.unlabelled_bound(params, x, eps)["class_elbo"]
  # Independent: the encoder and decoder on the concatenated one-hot, numpy densities.
  for k in (0, 6):
    onehot = jnp.broadcast_to(jnp.eye(K)[k], (4, K))
    mean, scale = (np.asarray(a) for a in model._apply(params, "equivariant_encoder", x, onehot))
    z = mean + scale * np.asarray(eps[:, k])
    logits = model._apply(params, "decoder", onehot, jnp.asarray(z))
    expected = (_np_bernoulli_log_prob(logits, np.asarray(x)) - _np_gauss_kl(mean, scale)
                - np.log(K))
    np.testing.assert_allclose(got[:, k], expected, rtol=1e-5)


def test_vae_loss_is_the_mean_negative_elbo_of_every_image():
  params = model.init(jax.random.key(0), tiny_model_config(kind="vae"))
  assert set(params.nets) == {"equivariant_encoder", "decoder"}
  x = _binary_images(6)
  labelled = {"image": x[:2], "label": jnp.array([1, 2])}
  key = jax.random.key(8)
  total, metrics = objective.loss(params, labelled, {"image": x[2:]}, key, alpha=50.0)
  eps = jax.random.normal(key, (6, params.config.z_dim))
  mean, scale = (np.asarray(a) for a in model._apply(params, "equivariant_encoder", x, None))
  z = mean + scale * np.asarray(eps)
  logits = model._apply(params, "decoder", None, jnp.asarray(z))
  elbo = _np_bernoulli_log_prob(logits, np.asarray(x)) - _np_gauss_kl(mean, scale)
  np.testing.assert_allclose(float(total), -elbo.mean(), rtol=1e-5)
  assert "cross_entropy" not in metrics   # labels (and alpha) play no part


def test_pixel_log_prob_equals_distrax_bernoulli():
  logits = jax.random.normal(jax.random.key(0), (3, 28, 28, 1)) * 4
  x = _binary_images(3)
  np.testing.assert_allclose(distributions.pixel_log_prob(logits, x),
                             distributions.pixel_likelihood(logits).log_prob(x), rtol=1e-5)


@pytest.mark.parametrize("routing", ["conditional", "strict"])
def test_kl_weight_scales_only_the_kl_in_both_bounds(routing):
  params = _params(routing)
  x = _binary_images(8)
  labelled = {"image": x[:4], "label": jnp.array([1, 3, 5, 7])}
  key = jax.random.key(5)
  eps_l = jax.random.normal(key, (4, params.config.z_dim))
  plain = objective.labelled_elbo(params, x[:4], labelled["label"], eps_l)
  heavy = objective.labelled_elbo(params, x[:4], labelled["label"], eps_l, kl_weight=3.0)
  np.testing.assert_allclose(heavy["kl"], plain["kl"])
  np.testing.assert_allclose(heavy["elbo"], plain["elbo"] - 2.0 * plain["kl"], rtol=1e-5)

  eps_u = jax.random.normal(key, objective.latent_noise_shape(params.config, 4, labelled=False))
  per_class = []
  for k in range(K):   # the beta-weighted L(x, k), one class at a time, from its terms
    eps_k = eps_u if routing == "strict" else eps_u[:, k]
    terms = objective.labelled_elbo(params, x[4:], jnp.full(4, k), eps_k)
    per_class.append(np.asarray(terms["reconstruction"] - 3.0 * terms["kl"]) - np.log(K))
  got = objective.unlabelled_bound(params, x[4:], eps_u, kl_weight=3.0)
  np.testing.assert_allclose(got["class_elbo"], np.stack(per_class, 1), rtol=1e-5)

  total_1, _ = objective.loss(params, labelled, {"image": x[4:]}, key, alpha=0.0)
  total_3, metrics_3 = objective.loss(params, labelled, {"image": x[4:]}, key, alpha=0.0,
                                      kl_weight=3.0)
  assert float(total_3) > float(total_1)   # KL > 0, so weighting it up raises the loss
  np.testing.assert_allclose(total_3, -metrics_3["labelled_elbo"] - metrics_3["unlabelled_bound"],
                             rtol=1e-6)


def test_entropy_weight_adds_only_weighted_entropy_of_q_y():
  params, unlabelled, _, (plain, metrics), (soft, soft_metrics) = _loss_without_and_with(
      entropy_weight=4.0)
  # The entropy of q(y|x), from the classifier's logits in float64 numpy.
  log_q = _np_log_softmax(model.classify(params, unlabelled["image"]))
  entropy = -np.sum(np.exp(log_q) * log_q, axis=-1)
  np.testing.assert_allclose(float(plain) - float(soft), 3.0 * entropy.mean(), rtol=1e-4)
  # The logged bound stays U itself.
  np.testing.assert_allclose(soft_metrics["unlabelled_bound"], metrics["unlabelled_bound"])


def test_classifier_dropout_changes_only_the_classifier_terms():
  """Dropout in q(y | x) leaves the latent noise, and so the labelled ELBO, as it was;
  at rate 0 a key changes nothing, so the loss is the deterministic classifier's."""
  import dataclasses
  params = _params()
  dropout = dataclasses.replace(params, config=dataclasses.replace(params.config,
                                                                  classifier_dropout=0.5))
  labelled, unlabelled = _labelled_and_unlabelled([1, 3, 5, 7])
  key = jax.random.key(5)
  _, metrics = objective.loss(params, labelled, unlabelled, key, alpha=2.0)
  _, metrics_d = objective.loss(dropout, labelled, unlabelled, key, alpha=2.0)
  np.testing.assert_allclose(metrics_d["labelled_elbo"], metrics["labelled_elbo"], rtol=1e-6)
  assert abs(float(metrics_d["cross_entropy"]) - float(metrics["cross_entropy"])) > 1e-4
  assert abs(float(metrics_d["unlabelled_entropy"]) - float(metrics["unlabelled_entropy"])) > 1e-4
  log_q = _np_log_softmax(model.classify(params, labelled["image"]))
  np.testing.assert_allclose(metrics["cross_entropy"], -np.mean(log_q[np.arange(4), [1, 3, 5, 7]]),
                             rtol=1e-5)


def test_consistency_adds_weighted_kl_between_the_two_views():
  """loss(w) - loss(0) = w * mean KL(q(y|x) || q(y|x')), checked in numpy; the target
  q(y|x) gets no gradient from it."""
  params = _params()
  labelled, unlabelled = _labelled_and_unlabelled([0, 2, 4, 6])
  view = jnp.roll(unlabelled["image"], 2, axis=2)
  unlabelled = {"image": unlabelled["image"], "view": view}
  key = jax.random.key(9)
  base, _ = objective.loss(params, labelled, unlabelled, key, alpha=1.0)
  weighted, metrics = objective.loss(params, labelled, unlabelled, key, alpha=1.0,
                                     consistency_weight=3.0)
  log_p = _np_log_softmax(model.classify(params, unlabelled["image"]))
  log_q = _np_log_softmax(model.classify(params, view))
  kl = np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1))
  assert kl > 1e-4
  np.testing.assert_allclose(metrics["consistency"], kl, rtol=1e-4)
  np.testing.assert_allclose(float(weighted) - float(base), 3.0 * kl, rtol=1e-3)

  # No gradient through the target: the term's gradient w.r.t. the target's logits is 0.
  target = model.classify(params, unlabelled["image"])
  grad_target = jax.grad(lambda t: jnp.mean(objective.consistency(t, log_q)))(target)
  np.testing.assert_array_equal(grad_target, 0.0)
  grad_view = jax.grad(lambda v: jnp.mean(objective.consistency(target, v)))(
      jnp.asarray(log_q, jnp.float32))
  assert np.abs(grad_view).max() > 1e-4


def test_a_teacher_reads_the_consistency_target_and_gets_no_gradient():
  """With teacher_params the target is the teacher's q(y | x) (checked in numpy); a
  teacher equal to the model gives the plain consistency loss; the teacher is never
  differentiated and the target still stops the gradient."""
  params = _params()
  teacher = model.classifier_only(_params(seed=3))
  assert set(teacher.nets) == {"classifier"}
  labelled, unlabelled = _labelled_and_unlabelled([0, 2, 4, 6])
  view = jnp.roll(unlabelled["image"], 2, axis=2)
  unlabelled = {"image": unlabelled["image"], "view": view}
  key = jax.random.key(9)
  run = lambda **kw: objective.loss(params, labelled, unlabelled, key, alpha=1.0,
                                    consistency_weight=3.0, **kw)
  plain, plain_metrics = run()
  same, same_metrics = run(teacher_params=model.classifier_only(params))
  np.testing.assert_allclose(float(same), float(plain), rtol=1e-6)
  np.testing.assert_allclose(same_metrics["consistency"], plain_metrics["consistency"], rtol=1e-6)

  taught, metrics = run(teacher_params=teacher)
  log_p = _np_log_softmax(model.classify(teacher, unlabelled["image"]))
  log_q = _np_log_softmax(model.classify(params, view))
  kl = np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1))
  np.testing.assert_allclose(metrics["consistency"], kl, rtol=1e-4)
  # Only the consistency term changed: the rest of the loss is the plain one's.
  np.testing.assert_allclose(float(taught) - 3.0 * kl,
                             float(plain) - 3.0 * float(plain_metrics["consistency"]), rtol=1e-4)
  grads = jax.grad(lambda t: run(teacher_params=t)[0])(teacher)
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads))


def test_class_balance_adds_weighted_kl_of_the_batch_mean_prediction():
  """loss(w) - loss(0) = w * KL(mean_x q(y|x) || 1/K), checked in numpy; the term is 0 for
  a batch whose predictions average to the prior, and its gradient lowers the logit of
  a class the batch over-predicts."""
  params, unlabelled, _, (base, _), (weighted, metrics) = _loss_without_and_with(
      balance_weight=3.0)
  q = np.exp(_np_log_softmax(model.classify(params, unlabelled["image"])))
  mean = q.mean(axis=0)
  kl = np.sum(mean * np.log(mean * q.shape[1]))
  assert kl > 1e-4
  np.testing.assert_allclose(metrics["class_balance"], kl, rtol=1e-4)
  np.testing.assert_allclose(float(weighted) - float(base), 3.0 * kl, rtol=1e-3)

  k = 10
  confident = 30.0 * jnp.eye(k)                      # one image per class: balanced
  assert abs(float(objective.class_balance(confident))) < 1e-6
  skewed = confident.at[1].set(confident[8])         # the 1 read as an 8
  # mean: 0 for class 1, 2 / K for class 8, 1 / K elsewhere, so KL = (2 / K) log 2.
  assert abs(float(objective.class_balance(skewed)) - 2 * np.log(2) / k) < 1e-5
  soft = jnp.zeros((4, k)).at[:, 8].set(1.0)         # every image leans to 8
  grad = jax.grad(objective.class_balance)(soft)
  assert np.all(np.asarray(grad[:, 8]) > 0)          # descent lowers the 8 logit
  np.testing.assert_allclose(np.asarray(grad).sum(axis=1), 0.0, atol=1e-6)


def test_classifier_image_is_what_q_y_reads_and_leaves_the_elbo_alone():
  """With "classifier_image" in the batches, q(y | .) reads it in both the labelled
  cross-entropy and U; the ELBO terms still score "image". Checked in numpy."""
  params = _params()
  labelled, unlabelled = _labelled_and_unlabelled([1, 3, 5, 7])
  rng = np.random.default_rng(4)
  grey_l, grey_u = (jnp.asarray(rng.random((4, 28, 28, 1)), jnp.float32) for _ in range(2))
  key = jax.random.key(3)
  _, plain = objective.loss(params, labelled, unlabelled, key, alpha=2.0)
  _, metrics = objective.loss(params, dict(labelled, classifier_image=grey_l),
                              dict(unlabelled, classifier_image=grey_u), key, alpha=2.0)
  np.testing.assert_allclose(metrics["labelled_elbo"], plain["labelled_elbo"], rtol=1e-6)
  log_q_l = _np_log_softmax(model.classify(params, grey_l))
  np.testing.assert_allclose(metrics["cross_entropy"],
                             -np.mean(log_q_l[np.arange(4), [1, 3, 5, 7]]), rtol=1e-5)
  assert abs(float(metrics["cross_entropy"]) - float(plain["cross_entropy"])) > 1e-4
  log_q_loss = _np_log_softmax(model.classify(params, grey_u))
  np.testing.assert_allclose(metrics["unlabelled_entropy"],
                             -np.mean(np.sum(np.exp(log_q_loss) * log_q_loss, 1)), rtol=1e-5)
  # U = sum_y q(y | grey) L(x, y) + H(q(y | grey)), with L(x, y) from the binary x.
  eps = jax.random.normal(jax.random.key(8), (4, K, params.config.z_dim))
  class_elbo = np.asarray(objective.unlabelled_bound(params, unlabelled["image"], eps)["class_elbo"])
  log_q_u = _np_log_softmax(model.classify(params, grey_u))
  q_u = np.exp(log_q_u)
  expected = np.sum(q_u * class_elbo, 1) - np.sum(q_u * log_q_u, 1)
  bound = objective.unlabelled_bound(params, unlabelled["image"], eps, classifier_x=grey_u)
  np.testing.assert_allclose(bound["bound"], expected, rtol=1e-5)
  np.testing.assert_allclose(bound["class_elbo"], class_elbo, rtol=1e-6)


def test_virtual_adversarial_matches_a_jacobian_power_iteration_in_numpy():
  """The perturbation is epsilon times the unit gradient of KL(q(y|x) || q(y|x + r)) at
  the probe r = xi d (d the unit random draw), here from the classifier's Jacobian and
  numpy; the divergence there beats random directions of the same norm; and only the
  classifier at x + r_adv is trained (r_adv carries no gradient)."""
  params = _params()
  x = _binary_images(3, seed=5)
  target = model.classify(params, x)
  key, epsilon = jax.random.key(11), 2.0
  got = objective.virtual_adversarial(params, x, target, key, epsilon)

  def unit(v):
    return v / np.linalg.norm(v.reshape(len(v), -1), axis=1).reshape(-1, 1, 1, 1)

  p = np.exp(_np_log_softmax(target))
  probe = objective.VAT_XI * unit(np.asarray(jax.random.normal(key, x.shape), np.float64))
  r_adv = []
  for i in range(len(x)):                      # d KL / d r = J^T (q(y | x + r) - p)
    at = jnp.asarray(x[i] + probe[i], jnp.float32)
    jacobian = np.asarray(jax.jacobian(lambda v: model.classify(params, v))(at), np.float64)
    q = np.exp(_np_log_softmax(model.classify(params, at)))
    r_adv.append(np.tensordot(q - p[i], jacobian, axes=1))
  r_adv = epsilon * unit(np.stack(r_adv))

  def np_divergence(r):
    log_q = _np_log_softmax(model.classify(params, jnp.asarray(x + r, jnp.float32)))
    return np.sum(p * (np.log(p) - log_q), axis=-1)

  expected = np_divergence(r_adv)
  np.testing.assert_allclose(got, expected, rtol=2e-3)
  rng = np.random.default_rng(0)
  random_best = np.max([np_divergence(epsilon * unit(rng.normal(size=x.shape)))
                        for _ in range(20)], axis=0)
  assert np.all(expected > random_best), (expected, random_best)

  fixed = jnp.asarray(r_adv, jnp.float32)
  grad = jax.grad(lambda q: jnp.sum(objective.virtual_adversarial(q, x, target, key, epsilon)))(
      params)
  grad_fixed = jax.grad(lambda q: jnp.sum(objective.consistency(
      target, model.classify(q, x + fixed))))(params)
  for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(grad_fixed)):
    np.testing.assert_allclose(a, b, rtol=2e-2, atol=1e-6)


def test_vat_weight_adds_the_weighted_virtual_adversarial_term():
  params, unlabelled, key, (base, _), (weighted, metrics) = _loss_without_and_with(
      vat_weight=5.0, vat_epsilon=1.5)
  direct = objective.virtual_adversarial(
      params, unlabelled["image"], model.classify(params, unlabelled["image"]),
      jax.random.fold_in(key, 4), 1.5)
  assert float(metrics["virtual_adversarial"]) > 1e-4
  np.testing.assert_allclose(metrics["virtual_adversarial"], jnp.mean(direct), rtol=1e-5)
  np.testing.assert_allclose(float(weighted) - float(base),
                             5.0 * float(metrics["virtual_adversarial"]), rtol=1e-3)


@pytest.mark.parametrize("routing", ["conditional", "strict"])
def test_generative_views_are_the_public_apis_reconstruction_and_transfer(routing):
  """The grey view is p(x | y_hat, z).mean() through the public API: z of x itself
  ("reconstruction", i.e. `transfer` to x's own predicted class) or of the image before
  it in the batch ("transfer"); the binary view draws those probabilities."""
  params = _params(routing)
  x = _binary_images(5)
  logits = model.classify(params, x)
  y_hat = jnp.argmax(logits, axis=-1)
  key = jax.random.key(4)
  own = model.transfer(params, x, y_hat).mean()
  others = model.generate(params, y_hat,
                          jnp.roll(model.encode_equivariant(params, x).mean(), 1, axis=0)).mean()
  for source, expected in (("reconstruction", own), ("transfer", others)):
    got = objective.generative_view(params, x, logits, key, source, grey=True)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(own) - np.asarray(others)).max() > 1e-3
  draws = jax.vmap(lambda k: objective.generative_view(params, x, logits, k, "transfer"))(
      jax.random.split(key, 2000))
  assert set(np.unique(np.asarray(draws))) <= {0.0, 1.0}
  # Bernoulli frequencies over 2,000 draws: standard error at most 0.011 per pixel.
  np.testing.assert_allclose(np.mean(np.asarray(draws), axis=0), others, atol=0.06)
  with pytest.raises(ValueError, match="Unknown generative view 'prior'"):
    objective.generative_view(params, x, logits, key, "prior")


def test_generative_weight_adds_the_weighted_kl_and_trains_only_the_classifier():
  """loss(w) - loss(0) = w * mean KL(q(y|x) || q(y|x')), x' the transfer view, checked in
  numpy on a grey classifier input (so that x' is the decoder's probabilities, no draw);
  the term's gradient reaches the classifier and nothing else."""
  params = _params()
  labelled, unlabelled = _labelled_and_unlabelled([0, 2, 4, 6])
  grey = jnp.asarray(np.random.default_rng(5).random(unlabelled["image"].shape), jnp.float32)
  unlabelled = dict(unlabelled, classifier_image=grey)
  key = jax.random.key(9)

  def loss(p, weight):
    return objective.loss(p, labelled, unlabelled, key, alpha=2.0, generative_weight=weight,
                          generative_source="transfer")

  (base, _), base_grads = jax.value_and_grad(loss, has_aux=True)(params, 0.0)
  (weighted, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params, 4.0)
  log_p = _np_log_softmax(model.classify(params, grey))
  y_hat = np.argmax(log_p, axis=1)
  z = jnp.roll(model.encode_equivariant(params, unlabelled["image"], y_hat).mean(), 1, axis=0)
  log_q = _np_log_softmax(model.classify(params, model.generate(params, y_hat, z).mean()))
  kl = np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1))
  assert kl > 1e-4
  np.testing.assert_allclose(metrics["generative_consistency"], kl, rtol=1e-4)
  # The difference of two float32 losses of about 1,100 nats: absolute rounding.
  np.testing.assert_allclose(float(weighted) - float(base), 4.0 * kl,
                             atol=1e-6 * abs(float(base)))
  for name in ("equivariant_encoder", "decoder", "invariant_embedding"):
    for got, want in zip(jax.tree.leaves(grads.nets[name]),
                         jax.tree.leaves(base_grads.nets[name])):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  moved = max(float(jnp.abs(a - b).max()) for a, b in zip(
      jax.tree.leaves(grads.nets["classifier"]), jax.tree.leaves(base_grads.nets["classifier"])))
  assert moved > 1e-5
