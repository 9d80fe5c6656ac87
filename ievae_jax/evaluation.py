"""Measures of a trained model: the spec's "what it works means" table.

- `classification_error`: argmax q(y | x) against the label; `confusion_summary`:
  which classes the errors come from; `ink_slant`: how far each image's strokes
  lean, to see which styles the errors take.
- `fit_linear_probe` / `probe_accuracy`: how much class a representation carries,
  read by a multinomial logistic regression fitted on training features.
- `within_class_variance_share`: how invariant a representation is (0: it is
  the same for every member of a class).
- `importance_weighted_bound`: the IWAE bound on log p(x) (Burda et al. 2016);
  `unlabelled_bound`: the training objective's own U(x), which needs no label (used
  to choose among restarts of one labelled set, benchmarks/restart_selection.py).
- `generative_view_statistics`: what the generative consistency's second views are
  read as.
- `transfer_accuracy`: whether `transfer(x, y')` looks like class y' to an
  independent classifier (passed in as a function; see `reference_classifier`).

Images are uint8 (N, H, W, C) at the boundary; classifiers and encoders see grey
levels in [0, 1] (as in training's validation error), the likelihood sees a
binarisation (see `importance_weighted_bound`).
"""

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ievae_jax import distributions, model, objective
from ievae_jax import step as step_lib


def batched(fn: Callable, *arrays: np.ndarray, batch_size: int = 1000) -> np.ndarray:
  """fn applied to aligned batches of `arrays` (first axis), results concatenated.

  The last partial batch is padded with copies of its first row so that `fn`
  (usually jitted) compiles once; the padding is dropped from the result.
  """
  n = len(arrays[0])
  out = []
  for start in range(0, n, batch_size):
    chunk = [a[start:start + batch_size] for a in arrays]
    valid = len(chunk[0])
    if valid < batch_size:
      chunk = [np.concatenate([c, np.repeat(c[:1], batch_size - valid, 0)]) for c in chunk]
    out.append(np.asarray(fn(*chunk))[:valid])
  return np.concatenate(out)


def grey(images: jnp.ndarray) -> jnp.ndarray:
  """uint8 images -> float32 grey levels in [0, 1]."""
  return images.astype(jnp.float32) / 255.0


@jax.jit
def _predictions(params: model.Params, images: jnp.ndarray) -> jnp.ndarray:
  return jnp.argmax(model.classify(params, grey(images)), -1)


def predict(params: model.Params, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
  """argmax q(y | x) for uint8 images (N, H, W, C) -> (N,) int."""
  return batched(functools.partial(_predictions, params), images, batch_size=batch_size)


def classification_error(params: model.Params, images: np.ndarray, labels: np.ndarray,
                         batch_size: int = 1000) -> float:
  """Fraction of images (N, H, W, C) uint8 whose argmax q(y | x) differs from labels (N,)."""
  return float(np.mean(predict(params, images, batch_size) != labels))


def confusion_summary(labels: np.ndarray, predictions: np.ndarray, num_classes: int,
                      top: int = 5) -> dict:
  """Where the errors are. labels, predictions (N,) int -> {
    "error": the fraction wrong,
    "per_class_error": K floats by true class (None for a class with no example),
    "top_confusions": up to `top` (true, predicted) pairs with true != predicted, most
      frequent first; pairs that never occur are left out,
    "share_kl": KL(predicted class shares || true class shares), 0 when every class is
      predicted as often as it occurs: a cluster of one class read as another raises
      it even where each prediction is confident (None if a class that never occurs
      is predicted)}."""
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (labels, predictions), 1)
  off_diagonal = counts * (1 - np.eye(num_classes, dtype=counts.dtype))
  order = np.argsort(off_diagonal, axis=None, kind="stable")[::-1][:top]
  predicted_share, true_share = (counts.sum(axis=axis) / counts.sum() for axis in (0, 1))
  shown = predicted_share > 0
  share_kl = (None if np.any(shown & (true_share == 0)) else float(np.sum(
      predicted_share[shown] * np.log(predicted_share[shown] / true_share[shown]))))
  return {
      "error": float(1 - np.trace(counts) / counts.sum()),
      "per_class_error": [float(1 - right / n) if n else None
                          for right, n in zip(np.diag(counts), counts.sum(axis=1))],
      "top_confusions": [{"true": int(i), "predicted": int(j), "count": int(off_diagonal[i, j])}
                         for i, j in zip(*np.unravel_index(order, counts.shape))
                         if off_diagonal[i, j] > 0],
      "share_kl": share_kl,
  }


def ink_slant(images: np.ndarray) -> np.ndarray:
  """How far the ink leans: -cov(column, row) / var(row) over pixel intensities, the
  shear that would make the image's second moments upright. 0 for an upright
  stroke, positive when its top leans right. uint8 or float (N, H, W, 1) -> (N,);
  an image without ink gives nan.
  """
  ink = np.asarray(images, np.float64)[..., 0]
  rows, cols = np.mgrid[:ink.shape[1], :ink.shape[2]]
  mass = ink.sum((1, 2))
  moment = lambda f: (ink * f).sum((1, 2)) / mass
  row_c = rows[None] - moment(rows)[:, None, None]
  col_c = cols[None] - moment(cols)[:, None, None]
  return -moment(col_c * row_c) / moment(row_c ** 2)


# ---- Linear probe -----------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit_probe(features, labels, num_classes: int, steps: int, l2: float):
  mean, std = features.mean(0), features.std(0) + 1e-6
  x = (features - mean) / std
  weights = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros(num_classes)}

  def objective(w):
    logits = x @ w["w"] + w["b"]
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return nll + l2 * jnp.sum(w["w"] ** 2)

  optimizer = optax.adam(0.05)

  def step(carry, _):
    w, opt_state = carry
    grads = jax.grad(objective)(w)
    updates, opt_state = optimizer.update(grads, opt_state)
    return (optax.apply_updates(w, updates), opt_state), None

  (weights, _), _ = jax.lax.scan(step, (weights, optimizer.init(weights)), None, length=steps)
  return {**weights, "mean": mean, "std": std}


def fit_linear_probe(features: np.ndarray, labels: np.ndarray, num_classes: int,
                     steps: int = 1000, l2: float = 1e-4) -> dict:
  """Multinomial logistic regression of labels (N,) on features (N, D).

  Features are standardised with their training mean and deviation; full-batch
  Adam (learning rate 0.05, `steps` steps) on the mean cross-entropy plus
  l2 * ||W||^2, a convex problem, so the fit is deterministic and near its optimum.
  Returns the probe's weights (a dict) for `probe_accuracy`.
  """
  return _fit_probe(jnp.asarray(features, jnp.float32), jnp.asarray(labels), num_classes,
                    steps, l2)


def probe_accuracy(probe: dict, features: np.ndarray, labels: np.ndarray) -> float:
  """Accuracy of a fitted probe on held-out features (N, D) and labels (N,)."""
  x = (jnp.asarray(features, jnp.float32) - probe["mean"]) / probe["std"]
  return float(jnp.mean(jnp.argmax(x @ probe["w"] + probe["b"], -1) == labels))


# ---- Invariance --------------------------------------------------------------------


def within_class_variance_share(representations: np.ndarray, labels: np.ndarray) -> float:
  """sum_c sum_{i in c} ||r_i - mean_c||^2 / sum_i ||r_i - mean||^2.

  representations (N, D), labels (N,). 0 when every class maps to one point, 1
  when the class means coincide. A constant representation (no variance at all)
  counts as 0: nothing varies within a class.
  """
  r = np.asarray(representations, np.float64)
  total = np.sum((r - r.mean(0)) ** 2)
  within = sum(np.sum((r[labels == c] - r[labels == c].mean(0)) ** 2)
               for c in np.unique(labels))
  return float(within / total) if total > 0 else 0.0


# ---- Density -----------------------------------------------------------------------


def log_importance_weights(params: model.Params, x: jnp.ndarray, key: jax.Array,
                           num_samples: int) -> jnp.ndarray:
  """log w_j = log p(x, y_j, z_j) - log q(y_j, z_j | x) for (y_j, z_j) ~ q(y|x) q(z|x, r_y).

  x (H, W, C) in {0, 1}, one image; returns (num_samples,). For the VAE there is
  no y: log w_j = log p(x, z_j) - log q(z_j | x). The mean of log w is a one-sample
  ELBO estimate (its expectation is U(x), or the VAE's ELBO).
  """
  config = params.config
  key_y, key_z = jax.random.split(key)
  eps = jax.random.normal(key_z, (num_samples, config.z_dim))
  prior = distributions.latent_prior(config.z_dim)
  if not config.has_classes:
    posterior = model.equivariant_posterior(params, x, None)
    z = posterior.mean() + posterior.stddev() * eps
    log_p_x = distributions.pixel_log_prob(model.decoder_logits(params, None, z), x)
    return log_p_x + prior.log_prob(z) - posterior.log_prob(z)
  q_y = distributions.class_posterior(model.classify(params, x))
  y = q_y.sample(seed=key_y, sample_shape=num_samples)                  # (S,)
  r = model.class_representations(params)                                # (K, r_dim)
  posterior = model.equivariant_posterior(params, x[None], r)            # batch (K,)
  mean, scale = posterior.mean()[y], posterior.stddev()[y]               # (S, z_dim)
  z = mean + scale * eps
  log_q_z = distributions.latent_posterior(mean, scale).log_prob(z)
  log_p_x = distributions.pixel_log_prob(model.decoder_logits(params, r[y], z), x)
  log_p_y = distributions.class_prior(config.num_classes).log_prob(y)
  return log_p_x + prior.log_prob(z) + log_p_y - log_q_z - q_y.log_prob(y)


@functools.partial(jax.jit, static_argnames="term")
def _unlabelled_term(params, x, eps, term: str):
  return objective.unlabelled_bound(params, x, eps)[term]


def _per_image_unlabelled_term(params: model.Params, binary_images: np.ndarray, key: jax.Array,
                               batch_size: int, term: str) -> np.ndarray:
  """One output of `objective.unlabelled_bound` per image, its z noise drawn from key."""
  shape = objective.latent_noise_shape(params.config, len(binary_images), labelled=False)
  eps = np.asarray(jax.random.normal(key, shape))
  fn = lambda x, e: _unlabelled_term(params, jnp.asarray(x, jnp.float32), e, term)
  return batched(fn, binary_images, eps, batch_size=batch_size)


def unlabelled_bound(params: model.Params, binary_images: np.ndarray, key: jax.Array,
                     batch_size: int = 500) -> np.ndarray:
  """U(x) per image in nats: the bound the unlabelled data train, with the sum over
  classes exact and one z draw per class hypothesis (objective.unlabelled_bound).

  binary_images (N, H, W, C) in {0, 1} -> (N,). It uses no label, so a mean over
  unlabelled images can rank runs of one labelled set. Pass the same images and key
  to every run compared, so they share their noise.
  """
  return _per_image_unlabelled_term(params, binary_images, key, batch_size, "bound")


def class_elbos(params: model.Params, binary_images: np.ndarray, key: jax.Array,
                batch_size: int = 500) -> np.ndarray:
  """L(x, y) for every image and class hypothesis, one z draw each, the noise drawn
  as in `unlabelled_bound`. binary_images (N, H, W, C) in {0, 1} -> (N, K).

  U(x) is maximised over q(y | x) by softmax_y L(x, y), so argmax_y L(x, y) is the
  class the unlabelled bound pulls the classifier toward.
  """
  return _per_image_unlabelled_term(params, binary_images, key, batch_size, "class_elbo")


def generative_predictions(params: model.Params, images: np.ndarray, key: jax.Array,
                           num_draws: int = 8) -> np.ndarray:
  """argmax_y of L(x, y) averaged over `num_draws` binarisations of each uint8 image
  (N, H, W, C) and z draws: the generative model's own reading of the class. (N,) int."""
  total = 0.0
  for draw_key in jax.random.split(key, num_draws):
    pixel_key, noise_key = jax.random.split(draw_key)
    binary = np.asarray(step_lib.pixel_targets(pixel_key, images))    # as the training step draws x
    total = total + class_elbos(params, binary, noise_key)
  return np.argmax(total, axis=-1)


@functools.partial(jax.jit, static_argnames=("source", "grey_view"))
def _view_readings(params: model.Params, x: jnp.ndarray, key: jax.Array, source: str,
                   grey_view: bool):
  logits = model.classify(params, x)
  view = objective.generative_view(params, x, logits, key, source, grey_view)
  view_logits = model.classify(params, view)
  return (jnp.argmax(logits, -1), jnp.argmax(view_logits, -1),
          objective.consistency(logits, view_logits))


def generative_view_statistics(params: model.Params, binary_images: np.ndarray,
                               labels: np.ndarray, key: jax.Array, source: str,
                               batch_size: int = 500, grey_view: bool = False) -> dict:
  """How the generative consistency's second views (`objective.generative_view`) relate
  to their targets, as the term sees them in training.

  binary_images (N, H, W, C) in {0, 1}, what the classifier reads in training; labels
  (N,). Each batch of batch_size images is one training batch: "transfer" takes the z
  of the image before within it. Returns the share of views the classifier reads as
  y_hat = argmax q(y | x) ("view_reads_as_y_hat") and as the label
  ("view_reads_as_label"), the mean KL(q(y | x) || q(y | x')) ("kl"), and the share of
  wrong y_hat ("y_hat_error", the term's target pointing at the wrong class).
  """
  # Not `batched`: its padding of a partial last batch would hand that batch's first
  # image the z of a copy of itself, a reconstruction instead of a transfer.
  y_hat, read, kl = (np.concatenate(parts) for parts in zip(*(
      jax.device_get(_view_readings(params, jnp.asarray(binary_images[i:i + batch_size],
                                                         jnp.float32),
                                    jax.random.fold_in(key, i), source, grey_view))
      for i in range(0, len(binary_images), batch_size))))
  return {"view_reads_as_y_hat": float(np.mean(read == y_hat)),
          "view_reads_as_label": float(np.mean(read == labels)),
          "kl": float(np.mean(kl)),
          "y_hat_error": float(np.mean(y_hat != labels))}


@functools.partial(jax.jit, static_argnames="num_samples")
def _iw_bounds(params, x, keys, num_samples: int):
  log_w = jax.vmap(lambda xi, k: log_importance_weights(params, xi, k, num_samples))(x, keys)
  return jax.nn.logsumexp(log_w, axis=-1) - math.log(num_samples)


def importance_weighted_bound(params: model.Params, binary_images: np.ndarray, key: jax.Array,
                              num_samples: int = 1000,
                              samples_per_call: int = 20000) -> np.ndarray:
  """log (1/k) sum_j w_j per image, a lower bound on log p(x) in nats that does not
  decrease in expectation as k grows (Burda et al. 2016).

  binary_images (N, H, W, C) in {0, 1} (the Bernoulli likelihood needs binary
  pixels; the evaluate command binarises the test set once, with a fixed seed).
  Images are processed `samples_per_call // num_samples` at a time so memory stays
  bounded. Returns (N,).
  """
  per_call = max(1, samples_per_call // num_samples)
  keys = jax.random.split(key, len(binary_images))
  key_data = np.asarray(jax.random.key_data(keys))
  fn = lambda x, k: _iw_bounds(params, jnp.asarray(x, jnp.float32),
                               jax.random.wrap_key_data(k), num_samples)
  return batched(fn, binary_images, key_data, batch_size=per_call)


# ---- Equivariance ------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames="num_classes")
def transfers(params, images, labels, num_classes: int):
  """Every uint8 image (B, H, W, C) redrawn in every class with z from q(z | x, r_label):
  (B, K, H, W, C) pixel probabilities."""
  x = grey(images)
  targets = jnp.broadcast_to(jnp.arange(num_classes), (x.shape[0], num_classes))
  z = model.encode_equivariant(params, x, labels).mean()                 # (B, z_dim)
  return model.generate(params, targets, z[:, None, :]).mean()


def transfer_accuracy(params: model.Params, images: np.ndarray, labels: np.ndarray,
                      score: Callable[[np.ndarray], np.ndarray],
                      batch_size: int = 500) -> dict:
  """How often transfer(x, y') is classified as y' by `score`, over y' != label.

  z comes from q(z | x, r_y) with y the true label, so the measure isolates what
  z keeps from x from the classifier's own mistakes. score: pixel probabilities
  (M, H, W, C) in [0, 1] -> predicted classes (M,), an independent classifier.
  Returns {"transfer_accuracy": float, "per_target_class": [K floats]}.
  """
  k = params.config.num_classes
  hits, counts = np.zeros(k), np.zeros(k)
  for start in range(0, len(images), batch_size):
    x, y = images[start:start + batch_size], labels[start:start + batch_size]
    drawn = np.asarray(transfers(params, x, y, k))                     # (B, K, H, W, C)
    predicted = score(drawn.reshape((-1,) + drawn.shape[2:])).reshape(len(x), k)
    targets = np.broadcast_to(np.arange(k), (len(x), k))
    other = targets != y[:, None]
    np.add.at(hits, targets[other], (predicted == targets)[other])
    np.add.at(counts, targets[other], 1)
  return {"transfer_accuracy": float(hits.sum() / counts.sum()),
          "per_target_class": (hits / np.maximum(counts, 1)).tolist()}
