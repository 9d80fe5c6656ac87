"""The routing: the class reaches the equivariant encoder and the decoder only through r_y."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ievae_jax
from ievae_jax import model, objective
from tests.conftest import tiny_model_config


def _collapse_invariant_embedding(params):
  """Params whose g(y) is the same vector for every class (last layer's kernel zeroed)."""
  nets = jax.tree.map(lambda a: a, params.nets)
  last = sorted(nets["invariant_embedding"])[-1]
  nets["invariant_embedding"][last]["kernel"] = jnp.zeros_like(
      nets["invariant_embedding"][last]["kernel"])
  return params.replace(nets=nets)


@pytest.fixture
def x():
  return jnp.asarray(np.random.default_rng(0).random((3, 28, 28, 1)) < 0.4, jnp.float32)


def test_class_changes_encoder_and_decoder_through_r(x):
  params = model.init(jax.random.key(0), tiny_model_config())
  means = [ievae_jax.encode_equivariant(params, x, jnp.full(3, k)).mean() for k in range(10)]
  assert not np.allclose(means[0], means[1])
  z = jnp.zeros((3, params.config.z_dim))
  images = [ievae_jax.generate(params, jnp.full(3, k), z).mean() for k in range(10)]
  assert not np.allclose(images[0], images[1])


def test_label_has_no_other_path_than_r(x):
  """With g collapsed to one vector, encoder, decoder and ELBO no longer see the class."""
  params = _collapse_invariant_embedding(model.init(jax.random.key(0), tiny_model_config()))
  z = jax.random.normal(jax.random.key(1), (3, params.config.z_dim))
  eps = jax.random.normal(jax.random.key(2), (3, params.config.z_dim))
  reference = None
  for k in range(10):
    y = jnp.full(3, k)
    outputs = (ievae_jax.encode_equivariant(params, x, y).mean(),
               ievae_jax.encode_equivariant(params, x, y).stddev(),
               ievae_jax.generate(params, y, z).mean(),
               objective.labelled_elbo(params, x, y, eps)["elbo"])
    if reference is None:
      reference = outputs
    for got, want in zip(outputs, reference):
      np.testing.assert_array_equal(got, want)


def test_strict_routing_encoder_ignores_the_label(x):
  params = model.init(jax.random.key(0), tiny_model_config(routing="strict"))
  means = [ievae_jax.encode_equivariant(params, x, jnp.full(3, k)).mean() for k in range(10)]
  for m in means[1:]:
    np.testing.assert_array_equal(m, means[0])
  assert "from_second" not in params.nets["equivariant_encoder"]["encoder_input"]
  # The decoder still sees the class, through r_y.
  z = jnp.zeros((3, params.config.z_dim))
  assert not np.allclose(ievae_jax.generate(params, jnp.zeros(3, int), z).mean(),
                         ievae_jax.generate(params, jnp.ones(3, int), z).mean())


def test_conditional_encoder_gradient_reaches_g_only(x):
  """d(encoder mean)/d(params) touches g and the encoder, never the classifier or decoder."""
  params = model.init(jax.random.key(0), tiny_model_config())
  grads = jax.grad(lambda p: ievae_jax.encode_equivariant(p, x, jnp.arange(3)).mean().sum())(
      params)
  norms = {name: float(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(tree)))
           for name, tree in grads.nets.items()}
  assert norms["invariant_embedding"] > 0 and norms["equivariant_encoder"] > 0
  assert norms["classifier"] == 0 and norms["decoder"] == 0
