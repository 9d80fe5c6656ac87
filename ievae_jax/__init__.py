"""ievae_jax: the invariant-equivariant VAE (Feige, ICML 2019) in JAX.

The public API is pure: parameters in (a `Params` pytree), arrays or distrax
distributions out; all of it works under jax.jit, jax.vmap and jax.grad.
"""

from ievae_jax.checkpointing import load
from ievae_jax.config import ConfigError, ModelConfig, TrainConfig
from ievae_jax.data import DataError
from ievae_jax.model import (Params, classify, decode, encode_equivariant, encode_invariant,
                             generate, init, transfer)
from ievae_jax.train_lib import NonFiniteLossError, TrainingInterrupted, train_and_evaluate

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "DataError", "ModelConfig", "NonFiniteLossError", "Params", "TrainConfig",
    "classify", "decode", "encode_equivariant", "encode_invariant", "generate", "init", "load",
    "train_and_evaluate", "TrainingInterrupted", "transfer",
]
