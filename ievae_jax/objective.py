"""The IE-VAE objective (Kingma et al. 2014's semi-supervised bound, routed).

    L(x, y) = E_q(z|x,r_y)[log p(x | r_y, z)] - KL(q(z|x,r_y) || p(z)) + log p(y)
    U(x)    = sum_y q(y|x) L(x, y) + H(q(y|x))
    J       = mean_labelled[-L(x, y)] + alpha * mean_labelled[-log q(y|x)]
              + mean_unlabelled[-U(x)]

Convention for alpha (named because batches average): every term is a batch
mean, and alpha multiplies the mean labelled cross-entropy. Kingma et al.'s
alpha = 0.1 N on the objective summed over the data set then reads alpha =
0.1 N / N_l (N training examples, N_l labelled), 55 for MNIST-100 with a
5,000-example validation split carved out of the 60,000. `step.default_alpha` computes
that default; `TrainConfig.alpha` overrides it. The semi-supervised launcher
overrides it with alpha = 550, ten times stronger, chosen on the validation split
(benchmarks/results/ACCURACY.md).

Baselines (`ModelConfig.kind`): M2 runs the same J with its own r_y (the one-hot
y). The VAE has no class, so its loss is the mean negative ELBO,
-E_q(z|x)[log p(x | z)] + KL(q(z | x) || p(z)), over every image of the step,
labelled or not (labels unused): `vae_elbo`.

Expectations over z use one reparameterised sample, z = mean + scale * eps, with
the standard-normal noise eps passed in explicitly so that the vectorised U can
be checked against a class-by-class computation with the same noise.
"""

from typing import Dict, Optional

import distrax
import jax
import jax.numpy as jnp

from ievae_jax import distributions, model
from ievae_jax.config import GENERATIVE_VIEWS
from ievae_jax.model import Params

Metrics = Dict[str, jnp.ndarray]


def _elbo_terms(params: Params, x: jnp.ndarray, r: jnp.ndarray, eps: jnp.ndarray):
  """log p(x | r, z) and KL(q(z | x, r) || p(z)) at z = mean + scale * eps.

  x (..., H, W, C), r (..., r_dim) and eps (..., z_dim) broadcast in their leading
  dims; returns two arrays of the broadcast batch shape.
  """
  posterior = model.equivariant_posterior(params, x, r)
  z = posterior.mean() + posterior.stddev() * eps
  reconstruction = distributions.pixel_log_prob(model.decoder_logits(params, r, z), x)
  kl = posterior.kl_divergence(distributions.latent_prior(params.config.z_dim))
  return reconstruction, kl


def latent_noise_shape(config, batch: int, labelled: bool):
  """Shape of eps: one z per example, and per class hypothesis for unlabelled data
  under the conditional routing (the strict routing's q(z | x) serves all K)."""
  if labelled or not config.encoder_sees_class:
    return (batch, config.z_dim)
  return (batch, config.num_classes, config.z_dim)


def labelled_elbo(params: Params, x: jnp.ndarray, y: jnp.ndarray, eps: jnp.ndarray,
                  kl_weight: float = 1.0) -> Metrics:
  """L(x, y) and its terms. x (B, H, W, C), y (B,) int, eps (B, z_dim) -> each (B,).

  kl_weight != 1 scales KL(q(z | .) || p(z)) in "elbo" (then a beta-weighted bound,
  not the ELBO); "kl" is always the unweighted KL.
  """
  r = model.invariant_representation(params, y)
  reconstruction, kl = _elbo_terms(params, x, r, eps)
  log_prior_y = distributions.class_prior(params.config.num_classes).log_prob(y)
  return {"elbo": reconstruction - kl_weight * kl + log_prior_y,
          "reconstruction": reconstruction, "kl": kl}


def unlabelled_bound(params: Params, x: jnp.ndarray, eps: jnp.ndarray,
                     kl_weight: float = 1.0,
                     dropout_key: Optional[jax.Array] = None,
                     classifier_x: Optional[jnp.ndarray] = None) -> Metrics:
  """U(x), with the sum over classes exact and vectorised.

  x (B, H, W, C); eps (B, K, z_dim), or (B, z_dim) under the strict routing.
  kl_weight scales the KL inside each L(x, y) as in `labelled_elbo`; dropout_key
  (training) is passed to `model.classify`. classifier_x (B, H, W, C), if given, is
  what q(y | .) reads instead of x (the grey levels behind a binarised x; any q
  leaves U a lower bound on log p(x)).
  Returns "bound" (B,), "entropy" (B,), "class_elbo" (B, K), which is L(x, y)
  for every class y, and "class_logits" (B, K), the logits of q(y | x).
  """
  num_classes = params.config.num_classes
  r_all = model.class_representations(params)                  # (K, r_dim)
  if eps.ndim == 2:                                            # strict: one z for all K
    eps = eps[:, None, :]
  reconstruction, kl = _elbo_terms(params, x[:, None], r_all, eps)  # (B, K) each
  log_prior_y = distributions.class_prior(num_classes).log_prob(jnp.arange(num_classes))
  class_elbo = reconstruction - kl_weight * kl + log_prior_y
  logits = model.classify(params, x if classifier_x is None else classifier_x, dropout_key)
  q_y = distributions.class_posterior(logits)
  bound = jnp.sum(q_y.probs * class_elbo, axis=-1) + q_y.entropy()
  return {"bound": bound, "entropy": q_y.entropy(), "class_elbo": class_elbo,
          "class_logits": logits}


def consistency(target_logits: jnp.ndarray, view_logits: jnp.ndarray) -> jnp.ndarray:
  """KL(q(y | x) || q(y | x')) with q(y | x) a fixed target (no gradient). (B, K) -> (B,)."""
  target = distributions.class_posterior(jax.lax.stop_gradient(target_logits))
  return target.kl_divergence(distributions.class_posterior(view_logits))


def class_balance(logits: jnp.ndarray) -> jnp.ndarray:
  """KL(mean_x q(y | x) || p(y)): how far the batch's average prediction is from the
  class prior. logits (B, K) -> scalar.

  With hard self-labelling a class can absorb a cluster of another (slanted 1s
  read as 8) while every single q(y | x) stays confident; what moves is the
  batch's average prediction (ACCURACY_LOG, twenty-seventh pass). A batch of B
  unlabelled images is itself uneven by chance (about (K - 1) / 2B nats), so the
  term is noisy per step and only its bias across steps points somewhere.
  """
  mean = jnp.mean(distributions.class_posterior(logits).probs, axis=0)
  return distrax.Categorical(probs=mean).kl_divergence(
      distributions.class_prior(logits.shape[-1]))


def generative_view(params: Params, x: jnp.ndarray, target_logits: jnp.ndarray,
                    key: jax.Array, source: str, grey: bool = False) -> jnp.ndarray:
  """A second view of each image drawn by the model itself: p(x | y_hat, z).

  y_hat is the argmax of q(y | x) (target_logits) and z the mean of q(z | x, r_y_hat);
  "reconstruction" decodes each image's own z, "transfer" the z of the image before
  it in the batch (the first image takes the last's): that image's style in x's
  predicted class, `model.transfer` with the z swapped. Pixels are drawn from the decoder's Bernoulli (key), as the classifier
  reads binarised images in training, or are its probabilities if `grey`.
  Nothing here carries gradient: the view is an input, like an augmented image.

  x (B, H, W, C), target_logits (B, K) -> (B, H, W, C).
  """
  if source not in GENERATIVE_VIEWS:
    raise ValueError(f"Unknown generative view {source!r}; use one of "
                     f"{', '.join(GENERATIVE_VIEWS)}.")
  frozen = jax.lax.stop_gradient(params)
  r = model.invariant_representation(frozen, jnp.argmax(target_logits, axis=-1))
  z = model.equivariant_posterior(frozen, x, r).mean()
  if source == "transfer":
    z = jnp.roll(z, 1, axis=0)
  probs = jax.nn.sigmoid(model.decoder_logits(frozen, r, z))
  if grey:
    return probs
  return jax.random.bernoulli(key, probs).astype(x.dtype)


# The power iteration's probe norm: small against the perturbations it finds (norm
# vat_epsilon, about 2), yet not the paper's 1e-6, whose change in q(y | x) float32
# rounds away: on a trained classifier the float32 direction at 1e-6 met a float64
# computation's at a median cosine of 0.66, at 0.1 at 1.0000 for every image
# (`benchmarks.vat_probe`, results/vat_probe.json).
VAT_XI = 0.1


def _unit_per_example(v: jnp.ndarray) -> jnp.ndarray:
  """v / ||v|| over all but the leading axis. (B, ...) -> (B, ...)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim)), keepdims=True))
  return v / jnp.maximum(norm, 1e-12)


def virtual_adversarial(params: Params, x: jnp.ndarray, target_logits: jnp.ndarray,
                        key: jax.Array, epsilon: float) -> jnp.ndarray:
  """Virtual adversarial divergence (Miyato et al. 2018), an extension beyond the paper.

  KL(q(y | x) || q(y | x + r_adv)) with q(y | x) a fixed target, where r_adv, of L2
  norm epsilon per image, is the direction one power iteration from a random start
  finds to change q(y | x) most. r_adv itself carries no gradient: only the
  classifier at x + r_adv is trained. Deterministic classifier (no dropout).

  x: what the classifier reads, (B, H, W, C); target_logits: q(y | x)'s logits (B, K).
  Returns (B,).
  """
  frozen = jax.lax.stop_gradient(params)

  def divergence(perturbation):
    return jnp.sum(consistency(target_logits, model.classify(frozen, x + perturbation)))

  probe = VAT_XI * _unit_per_example(jax.random.normal(key, x.shape, x.dtype))
  r_adv = epsilon * _unit_per_example(jax.grad(divergence)(probe))
  return consistency(target_logits, model.classify(params, x + r_adv))


def vae_elbo(params: Params, x: jnp.ndarray, eps: jnp.ndarray) -> Metrics:
  """The VAE's ELBO and its terms. x (B, H, W, C), eps (B, z_dim) -> each (B,)."""
  reconstruction, kl = _elbo_terms(params, x, None, eps)
  return {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}


def _vae_loss(params: Params, labelled, unlabelled, key: jax.Array):
  images = [labelled["image"]] + ([unlabelled["image"]] if unlabelled is not None else [])
  x = jnp.concatenate(images)
  eps = jax.random.normal(key, latent_noise_shape(params.config, x.shape[0], True))
  terms = vae_elbo(params, x, eps)
  total = -jnp.mean(terms["elbo"])
  return total, {"loss": total, "elbo": jnp.mean(terms["elbo"]),
                 "reconstruction": jnp.mean(terms["reconstruction"]),
                 "kl": jnp.mean(terms["kl"])}


def loss(params: Params, labelled: Dict[str, jnp.ndarray],
         unlabelled: Optional[Dict[str, jnp.ndarray]], key: jax.Array, alpha: float,
         kl_weight: float = 1.0, entropy_weight: float = 1.0,
         consistency_weight: float = 0.0, balance_weight: float = 0.0,
         vat_weight: float = 0.0, vat_epsilon: float = 2.0,
         generative_weight: float = 0.0, generative_source: str = "transfer",
         teacher_params: Optional[Params] = None):
  """J, the training loss to minimise, and its terms.

  Args:
    labelled: {"image": (B_l, H, W, C) in {0, 1}, "label": (B_l,) int}, and
      optionally "classifier_image" (B_l, H, W, C): what q(y | .) reads instead of
      "image" (`TrainConfig.classifier_input`).
    unlabelled: {"image": (B_u, H, W, C)} and optionally "classifier_image", or None
      for supervised training; with consistency_weight > 0 also "view": a second view
      of the same images, as the classifier reads it.
    key: the PRNG key of the latent noise (and of the classifier's dropout, if any).
    alpha: weight of the mean labelled cross-entropy (see the module docstring).
    kl_weight: weight of KL(q(z | .) || p(z)) in L and U; 1 is the paper's bound.
      Above 1 it makes class information dearer in z than in r_y (a beta-VAE
      weighting, `TrainConfig.kl_weight`).
    entropy_weight: weight of H(q(y|x)) in U; 1 is the paper's bound. Above 1,
      q(y|x)'s optimum on an unlabelled x is softmax(L(x, .) / entropy_weight), a
      softer self-labelling (`TrainConfig.entropy_weight`, annealed to 1 by
      step.entropy_weight). A scalar, traced or not. "unlabelled_bound" is always U itself.
    consistency_weight: extension beyond the paper (0: off): adds this times the
      mean `consistency` of q(y | image) and q(y | view) over the unlabelled batch
      (`TrainConfig.consistency_weight`). A Python number, not traced: at 0 the
      view is never classified.
    balance_weight: extension beyond the paper (0: off): adds this times
      `class_balance` of the unlabelled batch's q(y | x) (`TrainConfig.balance_weight`).
      A Python number, not traced.
    vat_weight, vat_epsilon: extension beyond the paper (vat_weight 0: off): adds
      vat_weight times the mean `virtual_adversarial` divergence of the unlabelled
      batch at perturbation norm vat_epsilon (`TrainConfig.vat_weight`). Python
      numbers, not traced.
    generative_weight, generative_source: extension beyond the paper
      (generative_weight 0: off): adds generative_weight times the mean `consistency`
      of q(y | x) and q(y | x'), x' the `generative_view` of the unlabelled batch
      ("reconstruction" or "transfer"; `TrainConfig.generative_weight`). The source
      is a Python string; the weight a Python number (at 0 the view is never drawn)
      or a traced scalar (a schedule, `step.generative_weight`: the term is computed
      whatever its value).
    teacher_params: extension beyond the paper (None: off). Parameters holding at
      least the classifier (`model.classifier_only`), an average of past parameters:
      the consistency target becomes their q(y | image) instead of the model's own
      (a mean teacher, `TrainConfig.teacher_decay`). Never differentiated.
  Returns:
    (J, metrics), metrics a dict of scalars.
  """
  config = params.config
  if not config.has_classes:
    return _vae_loss(params, labelled, unlabelled, key)
  key_labelled, key_unlabelled = jax.random.split(key)
  # Folded in rather than split, so that runs without dropout draw what they always drew.
  dropout_labelled, dropout_unlabelled = (jax.random.fold_in(key, i) for i in (1, 2))
  x_l, y_l = labelled["image"], labelled["label"]
  eps_l = jax.random.normal(key_labelled, latent_noise_shape(config, x_l.shape[0], True))
  terms = labelled_elbo(params, x_l, y_l, eps_l, kl_weight)
  logits = model.classify(params, labelled.get("classifier_image", x_l), dropout_labelled)
  cross_entropy = -distributions.class_posterior(logits).log_prob(y_l)
  total = -jnp.mean(terms["elbo"]) + alpha * jnp.mean(cross_entropy)
  metrics = {
      "labelled_elbo": jnp.mean(terms["elbo"]),
      "reconstruction": jnp.mean(terms["reconstruction"]),
      "kl": jnp.mean(terms["kl"]),
      "cross_entropy": jnp.mean(cross_entropy),
      "labelled_accuracy": jnp.mean(jnp.argmax(logits, -1) == y_l),
  }
  if unlabelled is not None:
    x_u = unlabelled["image"]
    eps_u = jax.random.normal(key_unlabelled, latent_noise_shape(config, x_u.shape[0], False))
    u_terms = unlabelled_bound(params, x_u, eps_u, kl_weight, dropout_unlabelled,
                               unlabelled.get("classifier_image"))
    weighted = u_terms["bound"] + (entropy_weight - 1.0) * u_terms["entropy"]
    total = total - jnp.mean(weighted)
    metrics["unlabelled_bound"] = jnp.mean(u_terms["bound"])
    metrics["unlabelled_entropy"] = jnp.mean(u_terms["entropy"])
    if consistency_weight:
      view_logits = model.classify(params, unlabelled["view"],
                                   jax.random.fold_in(key, 3))
      target_logits = u_terms["class_logits"]
      if teacher_params is not None:
        target_logits = model.classify(teacher_params, unlabelled.get("classifier_image", x_u))
      divergence = jnp.mean(consistency(target_logits, view_logits))
      total = total + consistency_weight * divergence
      metrics["consistency"] = divergence
    if isinstance(generative_weight, jax.Array) or generative_weight:
      classifier_x = unlabelled.get("classifier_image")
      view = generative_view(params, x_u, u_terms["class_logits"], jax.random.fold_in(key, 5),
                             generative_source, grey=classifier_x is not None)
      divergence = jnp.mean(consistency(
          u_terms["class_logits"], model.classify(params, view, jax.random.fold_in(key, 6))))
      total = total + generative_weight * divergence
      metrics["generative_consistency"] = divergence
    if balance_weight:
      imbalance = class_balance(u_terms["class_logits"])
      total = total + balance_weight * imbalance
      metrics["class_balance"] = imbalance
    if vat_weight:
      adversarial = jnp.mean(virtual_adversarial(
          params, unlabelled.get("classifier_image", x_u), u_terms["class_logits"],
          jax.random.fold_in(key, 4), vat_epsilon))
      total = total + vat_weight * adversarial
      metrics["virtual_adversarial"] = adversarial
  metrics["loss"] = total
  return total, metrics
