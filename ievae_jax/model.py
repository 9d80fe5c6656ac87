"""The IE-VAE as pure functions of a parameter pytree.

`Params` holds the weights of the four networks and, as static metadata, the
`ModelConfig` that says how to run them; so `classify(params, x)` needs nothing
else and works under `jax.jit`, `jax.vmap` and `jax.grad` (gradients come back as
a `Params` too).

The routing, the method's core, lives in two functions:
`equivariant_posterior(params, x, r)` builds q(z | x, r_y) from x and the invariant
representation r_y (the class reaches the encoder only through r_y; under the
"strict" routing it does not reach it at all), and `likelihood(params, r, z)`
builds p(x | y, z) from [r_y, z] (the class reaches the decoder only through r_y).

The baselines (`ModelConfig.kind`) differ in `class_representations` alone (M2:
r_y is the one-hot y) or have no class at all (VAE: r is None throughout, and
`classify` raises).
"""

from typing import Optional

import distrax
import flax.struct
import jax
import jax.numpy as jnp

from ievae_jax import distributions, nets
from ievae_jax.config import ModelConfig


@flax.struct.dataclass
class Params:
  """Weights of the IE-VAE's networks, keyed by `nets.Networks` field name."""
  config: ModelConfig = flax.struct.field(pytree_node=False)
  nets: dict


def init(key: jax.Array, config: ModelConfig) -> Params:
  """Fresh parameters for `config`."""
  config.validate()
  networks = nets.build(config)
  keys = jax.random.split(key, 4)
  x = jnp.zeros((1,) + tuple(config.image_shape))
  y_onehot = jnp.zeros((1, config.num_classes))
  r = jnp.zeros((1, config.r_dim))
  z = jnp.zeros((1, config.z_dim))
  if config.kind == "m2":
    r = y_onehot
  encoder_r = r if config.encoder_sees_class else None
  decoder_r = r if config.has_classes else None
  weights = {
      "equivariant_encoder": networks.equivariant_encoder.init(keys[2], x, encoder_r)["params"],
      "decoder": networks.decoder.init(keys[3], decoder_r, z)["params"],
  }
  if config.has_classes:
    weights["classifier"] = networks.classifier.init(keys[0], x)["params"]
    weights["invariant_embedding"] = networks.invariant_embedding.init(
        keys[1], y_onehot).get("params", {})
  return Params(config=config, nets=weights)


def _apply(params: Params, name: str, *args, **kwargs):
  module = getattr(nets.build(params.config), name)
  return module.apply({"params": params.nets[name]}, *args, **kwargs)


def _require_classes(params: Params, what: str) -> None:
  if not params.config.has_classes:
    raise ValueError(f"{what} needs a model with classes; this is a plain VAE (kind='vae'), "
                     f"which has only z: fit a probe on encode_equivariant(...).mean() instead.")


def classify(params: Params, x: jnp.ndarray,
             dropout_key: Optional[jax.Array] = None) -> jnp.ndarray:
  """Logits of q(y | x). x (..., H, W, C) -> (..., K).

  dropout_key: training only. With a key and `ModelConfig.classifier_dropout` > 0
  the classifier drops hidden units; without one (the default, and always in the
  public API) it is deterministic.
  """
  _require_classes(params, "classify")
  if dropout_key is None or not params.config.classifier_dropout:
    return _apply(params, "classifier", x)
  return _apply(params, "classifier", x, deterministic=False, rngs={"dropout": dropout_key})


def classifier_only(params: Params) -> Params:
  """The classifier's weights alone, as Params: enough for `classify` (a mean
  teacher keeps no more, TrainConfig.teacher_decay)."""
  _require_classes(params, "classifier_only")
  return Params(config=params.config, nets={"classifier": params.nets["classifier"]})


def class_representations(params: Params) -> jnp.ndarray:
  """r_y = g(y) for every class: (K, r_dim); M2: the one-hot codes, (K, K)."""
  _require_classes(params, "The invariant representation")
  return _apply(params, "invariant_embedding", jnp.eye(params.config.num_classes))


def invariant_representation(params: Params, y: jnp.ndarray) -> jnp.ndarray:
  """r_y = g(y). y integer (...) -> (..., r_dim)."""
  return class_representations(params)[y]


def equivariant_posterior(params: Params, x: jnp.ndarray, r: jnp.ndarray) -> distrax.Distribution:
  """q(z | x, r_y), or q(z | x) under the strict routing and for the VAE (r unused).

  x (..., H, W, C) and r (..., r_dim) broadcast in their leading dims: x of shape
  (B, 1, H, W, C) with r of shape (K, r_dim) gives B x K posteriors, one per class
  hypothesis, while the x part of the first layer runs once per image.
  """
  encoder_r = r if params.config.encoder_sees_class else None
  mean, scale = _apply(params, "equivariant_encoder", x, encoder_r)
  return distributions.latent_posterior(mean, scale)


def decoder_logits(params: Params, r: Optional[jnp.ndarray], z: jnp.ndarray) -> jnp.ndarray:
  """f([r_y, z]) (VAE: f(z), r ignored): Bernoulli logits, (..., H, W, C)."""
  return _apply(params, "decoder", r if params.config.has_classes else None, z)


def likelihood(params: Params, r: Optional[jnp.ndarray], z: jnp.ndarray) -> distrax.Distribution:
  """p(x | y, z) = Bernoulli(logits = f([r_y, z])). r, z broadcast -> batch (...)."""
  return distributions.pixel_likelihood(decoder_logits(params, r, z))


# ---- The public API --------------------------------------------------------------


def encode_invariant(params: Params, x: jnp.ndarray, hard: bool = False) -> jnp.ndarray:
  """The invariant representation of x: sum_y q(y|x) r_y, or r_argmax if `hard`.

  x (..., H, W, C) -> (..., r_dim).
  """
  logits = classify(params, x)
  r_all = class_representations(params)
  if hard:
    return r_all[jnp.argmax(logits, axis=-1)]
  return jax.nn.softmax(logits, axis=-1) @ r_all


def encode_equivariant(params: Params, x: jnp.ndarray,
                       y: Optional[jnp.ndarray] = None) -> distrax.Distribution:
  """q(z | x, r_y), a distrax Normal with event shape (z_dim,) and batch shape (...).

  y: integer class (...) to condition on; default: the classifier's argmax.
  Under the strict routing (and for the VAE) the posterior does not depend on y.
  """
  if not params.config.has_classes:
    return equivariant_posterior(params, x, None)
  if y is None:
    y = jnp.argmax(classify(params, x), axis=-1)
  return equivariant_posterior(params, x, invariant_representation(params, y))


def decode(params: Params, r: jnp.ndarray, z: jnp.ndarray) -> distrax.Distribution:
  """p(x | r, z) for an invariant representation r (..., r_dim) and z (..., z_dim).

  For the VAE r is ignored (pass None).

  Returns a distrax distribution with event shape (H, W, C); `.mean()` gives
  pixel probabilities.
  """
  return likelihood(params, r, z)


def generate(params: Params, y: jnp.ndarray, z: jnp.ndarray) -> distrax.Distribution:
  """p(x | y, z) = decode(params, g(y), z). y integer (...), z (..., z_dim)."""
  return decode(params, invariant_representation(params, y), z)


def transfer(params: Params, x: jnp.ndarray, y_target: jnp.ndarray,
             y: Optional[jnp.ndarray] = None) -> distrax.Distribution:
  """x redrawn in class y_target with x's own z.

  z is the mean of q(z | x, r_y), y being x's class (default: the classifier's
  argmax); the result is p(x | y_target, z) as a distrax distribution.
  """
  z = encode_equivariant(params, x, y).mean()
  return generate(params, jnp.broadcast_to(y_target, z.shape[:-1]), z)
