"""Networks: the split first layer equals a dense layer on the concatenation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_classifier_dropout_drops_hidden_units_and_rescales_the_rest():
  """With a key, each dropout layer zeroes about `rate` of its inputs and scales the
  others by 1 / (1 - rate); the logits are the last dense layer of what is left. Without
  a key (the public API) the classifier is the deterministic one."""
  import dataclasses
  from ievae_jax import model
  from ievae_jax.config import ModelConfig
  rate = 0.3
  config = ModelConfig(hidden=400, classifier_dropout=rate)
  params = model.init(jax.random.key(0), config)
  x = jax.random.uniform(jax.random.key(1), (6, 28, 28, 1))
  plain = dataclasses.replace(params, config=dataclasses.replace(config, classifier_dropout=0.0))
  np.testing.assert_array_equal(model.classify(params, x), model.classify(plain, x))
  np.testing.assert_array_equal(model.classify(plain, x, jax.random.key(2)),
                                model.classify(plain, x))
  key = jax.random.key(3)
  dropped = model.classify(params, x, key)
  np.testing.assert_array_equal(dropped, model.classify(params, x, key))
  assert not np.allclose(dropped, model.classify(params, x, jax.random.key(4)))

  classifier = nets.build(config).classifier
  logits, state = classifier.apply({"params": params.nets["classifier"]}, x,
                                   deterministic=False, rngs={"dropout": key},
                                   capture_intermediates=True, mutable=["intermediates"])
  np.testing.assert_array_equal(logits, dropped)
  inter = state["intermediates"]
  w = params.nets["classifier"]
  h = np.asarray(x).reshape(6, -1)
  for layer in range(2):
    dense = w[f"Dense_{layer}"]
    before = np.maximum(h @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"]), 0.0)
    after = np.asarray(inter[f"Dropout_{layer}"]["__call__"][0])
    kept = after != 0
    np.testing.assert_allclose(after[kept], before[kept] / (1 - rate), rtol=1e-4, atol=1e-5)
    dropped_share = np.mean(~kept[before > 0])
    assert abs(dropped_share - rate) < 0.05, dropped_share
    h = after
  last = w["Dense_2"]
  np.testing.assert_allclose(dropped, h @ np.asarray(last["kernel"]) + np.asarray(last["bias"]),
                             rtol=1e-4, atol=1e-4)


def test_classifier_dropout_rate_is_checked():
  from ievae_jax.config import ConfigError, ModelConfig
  for bad in (-0.1, 1.0, "half"):
    with pytest.raises(ConfigError, match="classifier_dropout must be a rate in"):
      ModelConfig(classifier_dropout=bad).validate()


@pytest.mark.parametrize("size,in_channels,out_channels,kernel", [
    (7, 64, 32, 5), (14, 32, 1, 5), (5, 3, 4, 4), (6, 2, 3, 3), (4, 2, 2, 2)])
def test_conv_transpose_2x_is_flax_conv_transpose_in_value_and_gradient(
    size, in_channels, out_channels, kernel):
  """The phase-split transposed convolution computes nn.ConvTranspose's stride-2 "SAME"
  layer exactly, with the same parameters, and the same gradients."""
  import flax.linen as nn
  from ievae_jax.nets import conv
  x = jax.random.normal(jax.random.key(0), (3, size, size, in_channels))
  reference = nn.ConvTranspose(out_channels, (kernel, kernel), strides=(2, 2))
  ours = conv.ConvTranspose2x(out_channels, (kernel, kernel))
  params = reference.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == jax.tree.map(
      jnp.shape, params)
  y = reference.apply(params, x)
  assert y.shape == (3, 2 * size, 2 * size, out_channels)
  np.testing.assert_allclose(ours.apply(params, x), y, atol=1e-5, rtol=1e-5)
  cotangent = jax.random.normal(jax.random.key(2), y.shape)
  grads = lambda module: jax.grad(lambda p, x: jnp.sum(module.apply(p, x) * cotangent),
                                  argnums=(0, 1))(params, x)
  for got, want in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(reference))):
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_conv_decoder_keeps_the_parameter_names_of_earlier_checkpoints():
  from ievae_jax.config import ModelConfig
  decoder = nets.build(ModelConfig(arch="conv")).decoder
  params = decoder.init(jax.random.key(0), jnp.zeros((1, 16)), jnp.zeros((1, 8)))["params"]
  assert params["ConvTranspose_0"]["kernel"].shape == (5, 5, 64, 32)
  assert params["ConvTranspose_1"]["kernel"].shape == (5, 5, 32, 1)


def test_conv_transpose_2x_refuses_a_one_wide_kernel():
  from ievae_jax.nets import conv
  with pytest.raises(ValueError, match="kernel sides of at least 2"):
    conv.conv_transpose_stride2(jnp.ones((1, 3, 3, 1)), jnp.ones((1, 3, 1, 2)))
