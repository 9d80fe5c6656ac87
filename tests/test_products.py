"""bfloat16 dense products: values and gradients against numpy, and XLA keeping them bf16."""

import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from ievae_jax import model, objective
from ievae_jax.config import ConfigError, ModelConfig
from ievae_jax.nets import products


def _round_bf16(a) -> np.ndarray:
  """a rounded to bfloat16 (numpy's ml_dtypes, not JAX), back in float64."""
  return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def test_bfloat16_matmul_value_and_gradients_match_numpy_on_rounded_factors():
  rng = np.random.default_rng(0)
  x, w = rng.normal(size=(6, 3, 40)).astype(np.float32), rng.normal(size=(40, 9)).astype(np.float32)
  upstream = rng.normal(size=(6, 3, 9)).astype(np.float32)
  dense = lambda x, w: products.bfloat16_dot_general(x, w, (((2,), (0,)), ((), ())))
  out, vjp = jax.vjp(dense, x, w)
  np.testing.assert_allclose(out, _round_bf16(x) @ _round_bf16(w), rtol=1e-5, atol=1e-5)
  dx, dw = vjp(jnp.asarray(upstream))
  g = _round_bf16(upstream).reshape(-1, 9)
  np.testing.assert_allclose(dx, (g @ _round_bf16(w).T).reshape(x.shape), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dw, _round_bf16(x).reshape(-1, 40).T @ g, rtol=1e-5, atol=1e-4)
  assert out.dtype == dx.dtype == dw.dtype == jnp.float32
  # Not the float32 product: the rounding is really there.
  assert np.max(np.abs(np.asarray(out) - x.astype(np.float64) @ w)) > 1e-4


def test_bfloat16_dot_general_refuses_other_products():
  with pytest.raises(ValueError, match="nn.Dense's product only"):
    products.bfloat16_dot_general(jnp.ones((2, 3)), jnp.ones((2, 4)), (((0,), (0,)), ((), ())))


def test_bfloat16_model_has_float32_parameters_and_close_but_rounded_outputs():
  key = jax.random.key(0)
  bf16 = ModelConfig(hidden=64, matmul_dtype="bfloat16")
  params = model.init(key, bf16)
  params_f32 = model.Params(config=ModelConfig(hidden=64), nets=params.nets)
  # The same parameter tree as float32's: one checkpoint serves both.
  assert (jax.tree.structure(params.nets)
          == jax.tree.structure(model.init(key, params_f32.config).nets))
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params.nets))
  images = jax.random.bernoulli(key, 0.3, (8, 28, 28, 1)).astype(jnp.float32)
  labelled, unlabelled = {"image": images[:4], "label": jnp.arange(4)}, {"image": images[4:]}
  loss = lambda p: objective.loss(p, labelled, unlabelled, jax.random.key(1), alpha=1.0)[0]
  value, grads = jax.value_and_grad(loss)(params)
  value_f32, grads_f32 = jax.value_and_grad(loss)(params_f32)
  assert np.isfinite(value) and abs(value - value_f32) < 1e-2 * abs(value_f32)
  assert value != value_f32
  # The classifier's gradient through U comes from differences between the classes'
  # bounds, each a sum of 784 rounded terms, so it moves more than the others'.
  for name in grads.nets:
    for g, g32 in zip(jax.tree.leaves(grads.nets[name]), jax.tree.leaves(grads_f32.nets[name])):
      assert g.dtype == jnp.float32
      bound = 0.15 if name == "classifier" else 0.02
      assert jnp.linalg.norm(g - g32) <= bound * jnp.linalg.norm(g32) + 1e-6, name
  # vmap over examples gives the batched logits.
  logits = jax.vmap(lambda x: model.classify(params, x))(images)
  np.testing.assert_allclose(logits, model.classify(params, images), rtol=1e-5, atol=1e-5)


def test_unknown_matmul_dtype_is_a_config_error():
  with pytest.raises(ConfigError, match="--matmul_dtype 'float16'"):
    ModelConfig(matmul_dtype="float16").validate()


# Run with XLA's optimisations on (the test session turns most of them off, and the
# fall-back to float32 is an optimisation pass's doing): the number of products in
# the compiled gradient whose operands are all bfloat16, ours and a naive one's.
_COUNT_BF16_PRODUCTS = textwrap.dedent("""
    import re, jax, jax.numpy as jnp
    from ievae_jax.nets import products

    def bf16_products(fn):
      x, w = jnp.ones((256, 128)), jnp.ones((128, 64))
      grad = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(fn(x, w))), (0, 1)))
      text = grad.lower(x, w).compile().as_text()
      types = dict(re.findall(r"%([\\w.-]+) = (\\w+)\\[", text))
      dots = re.findall(r"= \\w+\\[[^]]*\\]\\S* dot\\(%([\\w.-]+), %([\\w.-]+)\\)", text)
      return sum(types[a] == types[b] == "bf16" for a, b in dots), len(dots)

    naive = lambda x, w: jnp.dot(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                                 preferred_element_type=jnp.float32)
    print(*bf16_products(products.bfloat16_matmul), *bf16_products(naive))
""")


def test_xla_keeps_all_three_products_of_a_dense_layer_in_bfloat16():
  env = {**os.environ, "JAX_DISABLE_MOST_OPTIMIZATIONS": "0", "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", _COUNT_BF16_PRODUCTS], env=env, check=True,
                       capture_output=True, text=True).stdout.split()
  ours_bf16, ours_total, naive_bf16, naive_total = map(int, out)
  assert ours_total == naive_total == 3      # forward, input gradient, weight gradient
  assert ours_bf16 == 3
  # The check can fail: differentiating plain bf16 casts leaves backward products in float32.
  assert naive_bf16 < 3
