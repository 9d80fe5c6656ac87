"""Networks: the split first layer equals a dense layer on the concatenation."""

import jax
import jax.numpy as jnp
import numpy as np

from ievae_jax import nets


def test_concat_dense_is_a_dense_layer_on_the_concatenation():
  layer = nets.ConcatDense(7)
  a = jax.random.normal(jax.random.key(0), (5, 1, 4))     # 5 examples
  b = jax.random.normal(jax.random.key(1), (3, 2))        # 3 class codes
  variables = layer.init(jax.random.key(2), a, b)
  p = jax.tree.map(np.asarray, variables["params"])
  p["bias"] = np.random.default_rng(0).normal(size=7)     # a non-zero bias
  got = np.asarray(layer.apply({"params": p}, a, b))
  assert got.shape == (5, 3, 7)
  kernel = np.concatenate([p["from_first"]["kernel"], p["from_second"]["kernel"]])
  for i in range(5):
    for k in range(3):
      concatenated = np.concatenate([np.asarray(a)[i, 0], np.asarray(b)[k]])
      np.testing.assert_allclose(got[i, k], concatenated @ kernel + p["bias"], rtol=1e-5,
                                 atol=1e-5)


def test_concat_dense_without_second_input_has_no_second_kernel():
  layer = nets.ConcatDense(3)
  variables = layer.init(jax.random.key(0), jnp.ones((2, 4)), None)
  assert set(variables["params"]) == {"from_first", "bias"}


def test_classifier_architecture_is_chosen_apart_from_the_rest():
  from ievae_jax import model
  from ievae_jax.config import ConfigError, ModelConfig
  import pytest
  params = model.init(jax.random.key(0), ModelConfig(hidden=32, classifier_arch="conv"))
  assert "ConvTrunk_0" in params.nets["classifier"]                  # conv classifier
  assert "ConvTrunk_0" not in params.nets["equivariant_encoder"]     # MLP encoder
  assert set(params.nets["decoder"]) == {"decoder_input", "Dense_0", "Dense_1"}  # MLP decoder
  logits = model.classify(params, jnp.zeros((2, 3, 28, 28, 1)))
  assert logits.shape == (2, 3, 10)
  default = model.init(jax.random.key(0), ModelConfig(hidden=32))
  assert "ConvTrunk_0" not in default.nets["classifier"]
  with pytest.raises(ConfigError, match="Unknown classifier architecture 'vit'"):
    ModelConfig(classifier_arch="vit").validate()
