"""The dense layers' matrix products, in float32 (flax's own) or with bfloat16 inputs.

`ModelConfig.matmul_dtype = "bfloat16"` casts both factors of every dense layer's
product, forward and backward, to bfloat16 and accumulates and returns float32.
Parameters, activations, the loss and the optimiser stay float32; so do the conv
layers' convolutions. On a CPU with AVX512-BF16 this nearly halves the IE-VAE's
MLP step (README, "Speed"); the price is bfloat16's 8 significant bits in the products'
inputs (each factor rounded by up to 2^-9, about 0.2%, relative).

Why a custom VJP: differentiating a product of bfloat16 casts makes JAX's backward
products mix a float32 cotangent with a bfloat16 factor, and XLA's CPU backend runs
those in float32. Here the cotangent is cast too, and both backward products are
written with their transposed factor laid out explicitly (`_transposed`), because
XLA's CPU backend keeps a bfloat16 product in bfloat16 only in the plain
(rows x inner) . (inner x columns) form: a transpose it can fold into the product
makes it fall back to float32, at float32's speed.
"""

from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ievae_jax.config import MATMUL_DTYPES


def _transposed(a: jnp.ndarray) -> jnp.ndarray:
  """a.T for a 2-D a, written so that XLA materialises it instead of folding it into
  the product that consumes it (the same values; see the module docstring)."""
  return jnp.swapaxes(a[..., None], 0, 1).reshape(a.shape[::-1])


def _product(x_bf16: jnp.ndarray, w_bf16: jnp.ndarray) -> jnp.ndarray:
  return jnp.dot(x_bf16, w_bf16, preferred_element_type=jnp.float32)


@jax.custom_vjp
def bfloat16_matmul(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
  """x @ w with both factors rounded to bfloat16, accumulated in float32.

  x (N, D), w (D, F), both float32 -> (N, F) float32; float32 gradients.
  """
  return _forward(x, w)[0]


def _forward(x, w):
  x_bf16, w_bf16 = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
  return _product(x_bf16, w_bf16), (x_bf16, w_bf16)


def _backward(residuals, cotangent):
  x_bf16, w_bf16 = residuals
  g = cotangent.astype(jnp.bfloat16)
  return _product(g, _transposed(w_bf16)), _product(_transposed(x_bf16), g)


bfloat16_matmul.defvjp(_forward, _backward)


def bfloat16_dot_general(lhs, rhs, dimension_numbers, precision=None,
                         preferred_element_type=None):
  """`nn.Dense`'s product, inputs (..., D) times kernel (D, F), through `bfloat16_matmul`."""
  del precision, preferred_element_type  # bfloat16 factors, float32 result, always
  if dimension_numbers != (((lhs.ndim - 1,), (0,)), ((), ())) or rhs.ndim != 2:
    raise ValueError(f"bfloat16_dot_general computes nn.Dense's product only; got dimension "
                     f"numbers {dimension_numbers} for shapes {lhs.shape} and {rhs.shape}.")
  lead = lhs.shape[:-1]
  # Cast outside the custom VJP, so that its gradients are float32 and JAX casts them
  # back to whatever dtypes the caller's inputs had.
  out = bfloat16_matmul(lhs.reshape(-1, lhs.shape[-1]).astype(jnp.float32),
                        rhs.astype(jnp.float32))
  return out.reshape(lead + (rhs.shape[-1],))


def dense_product(matmul_dtype: str) -> Optional[Callable]:
  """`nn.Dense`'s `dot_general` for a `ModelConfig.matmul_dtype` (None: flax's default)."""
  if matmul_dtype not in MATMUL_DTYPES:
    raise ValueError(f"Unknown matmul dtype {matmul_dtype!r}; use one of {MATMUL_DTYPES}.")
  return bfloat16_dot_general if matmul_dtype == "bfloat16" else None


def Dense(features: int, matmul_dtype: str = "float32", **kwargs) -> nn.Dense:  # pylint: disable=invalid-name
  """An `nn.Dense` whose product follows `matmul_dtype`; its parameters are the same
  (names, shapes, float32), so one checkpoint serves both dtypes."""
  return nn.Dense(features, dot_general=dense_product(matmul_dtype), **kwargs)
