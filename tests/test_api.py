"""The public API: shapes, and jit / vmap / grad through every function."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ievae_jax
from tests.conftest import tiny_model_config


@pytest.fixture(scope="module", params=["mlp", "conv"])
def params(request):
  return ievae_jax.init(jax.random.key(0), tiny_model_config(arch=request.param))


X = jnp.asarray(np.random.default_rng(0).random((4, 28, 28, 1)), jnp.float32)


def test_shapes(params):
  c = params.config
  assert ievae_jax.classify(params, X).shape == (4, 10)
  assert ievae_jax.encode_invariant(params, X).shape == (4, c.r_dim)
  assert ievae_jax.encode_invariant(params, X, hard=True).shape == (4, c.r_dim)
  posterior = ievae_jax.encode_equivariant(params, X)
  assert isinstance(posterior, distrax.Distribution)
  assert posterior.event_shape == (c.z_dim,) and posterior.batch_shape == (4,)
  z = posterior.sample(seed=jax.random.key(1))
  assert ievae_jax.decode(params, ievae_jax.encode_invariant(params, X), z).mean().shape == X.shape
  assert ievae_jax.generate(params, jnp.arange(4), z).mean().shape == X.shape
  moved = ievae_jax.transfer(params, X, jnp.array([3, 3, 3, 3])).mean()
  assert moved.shape == X.shape and float(moved.min()) >= 0 and float(moved.max()) <= 1


def test_invariant_representation_is_the_class_average(params):
  from ievae_jax import model
  logits = ievae_jax.classify(params, X)
  r_all = model.class_representations(params)
  expected = jax.nn.softmax(logits) @ r_all
  np.testing.assert_allclose(ievae_jax.encode_invariant(params, X), expected, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(ievae_jax.encode_invariant(params, X, hard=True),
                             r_all[jnp.argmax(logits, -1)])


def test_jit_and_vmap_agree_with_eager(params):
  eager = ievae_jax.encode_invariant(params, X)
  np.testing.assert_allclose(jax.jit(ievae_jax.encode_invariant)(params, X), eager, rtol=1e-5,
                             atol=1e-6)
  per_example = jax.vmap(lambda x: ievae_jax.encode_invariant(params, x))(X)
  np.testing.assert_allclose(per_example, eager, rtol=1e-5, atol=1e-6)
  z_mean = jax.jit(lambda p, x: ievae_jax.encode_equivariant(p, x).mean())(params, X)
  np.testing.assert_allclose(z_mean, ievae_jax.encode_equivariant(params, X).mean(), rtol=1e-5,
                             atol=1e-6)
  vm = jax.vmap(lambda x, y: ievae_jax.transfer(params, x, y).mean())(X, jnp.arange(4))
  np.testing.assert_allclose(vm, ievae_jax.transfer(params, X, jnp.arange(4)).mean(), rtol=1e-4,
                             atol=1e-6)
  gen = jax.jit(lambda p, y, z: ievae_jax.generate(p, y, z).mean())(
      params, jnp.arange(4), jnp.zeros((4, params.config.z_dim)))
  assert gen.shape == X.shape


def test_grad_flows_through_the_api(params):
  def total(p, x):
    z = ievae_jax.encode_equivariant(p, x).mean()
    recon = ievae_jax.decode(p, ievae_jax.encode_invariant(p, x), z).log_prob(
        (x > 0.5).astype(jnp.float32))
    return recon.sum() + ievae_jax.classify(p, x).sum()
  grads = jax.grad(total)(params, X)
  assert isinstance(grads, ievae_jax.Params)
  norms = {k: float(optax_norm(v)) for k, v in grads.nets.items()}
  assert all(np.isfinite(v) and v > 0 for v in norms.values()), norms
  input_grad = jax.grad(lambda x: ievae_jax.classify(params, x).sum())(X)
  assert input_grad.shape == X.shape


def optax_norm(tree):
  return jnp.sqrt(sum(jnp.sum(a ** 2) for a in jax.tree.leaves(tree)))


def test_baselines_through_the_same_api():
  x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
  m2 = ievae_jax.init(jax.random.key(0), tiny_model_config(kind="m2"))
  probs = jax.nn.softmax(ievae_jax.classify(m2, x))
  np.testing.assert_allclose(ievae_jax.encode_invariant(m2, x), probs, rtol=1e-5)  # r_y = one-hot
  assert ievae_jax.transfer(m2, x, jnp.array([1, 2, 3])).mean().shape == x.shape
  vae = ievae_jax.init(jax.random.key(0), tiny_model_config(kind="vae"))
  q0 = ievae_jax.encode_equivariant(vae, x, jnp.array([0, 0, 0]))
  q9 = ievae_jax.encode_equivariant(vae, x, jnp.array([9, 9, 9]))
  np.testing.assert_array_equal(q0.mean(), q9.mean())   # no class anywhere
  assert ievae_jax.decode(vae, None, q0.mean()).mean().shape == x.shape
  with pytest.raises(ValueError, match="plain VAE"):
    ievae_jax.classify(vae, x)
  with pytest.raises(ValueError, match="plain VAE"):
    ievae_jax.transfer(vae, x, jnp.array([1, 2, 3]))
