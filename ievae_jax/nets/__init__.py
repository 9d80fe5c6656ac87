"""The four networks of the IE-VAE, as flax modules, chosen by architecture.

The baselines reuse them: M2's invariant embedding is the identity on the one-hot
class (`OneHotEmbedding`, no parameters); the VAE has no classifier and no
embedding (None), and its encoder and decoder take no class input.
"""

from typing import NamedTuple, Optional

import flax.linen as nn

from ievae_jax.config import ModelConfig
from ievae_jax.nets import conv, mlp
from ievae_jax.nets.layers import (ConcatDense, EquivariantEncoder, InvariantEmbedding,
                                   OneHotEmbedding)


class Networks(NamedTuple):
  classifier: Optional[nn.Module]           # c(x): logits of q(y | x); None for the VAE
  invariant_embedding: Optional[nn.Module]  # g(y) = r_y; None for the VAE
  equivariant_encoder: nn.Module   # q(z | x, r_y) or q(z | x)
  decoder: nn.Module               # f([r_y, z]): logits of p(x | y, z)


# Image features of the equivariant encoder, per architecture (see EquivariantEncoder).
_encoder_features = {"mlp": lambda: mlp.flatten_image, "conv": conv.ConvTrunk}


def build(config: ModelConfig) -> Networks:
  families = {"mlp": mlp, "conv": conv}
  family = families[config.arch]
  classifier_family = families[config.classifier_arch or config.arch]
  dtype = config.matmul_dtype
  embedding = {"ievae": lambda: InvariantEmbedding(config.hidden, config.r_dim, dtype),
               "m2": OneHotEmbedding, "vae": lambda: None}[config.kind]()
  return Networks(
      classifier=(classifier_family.Classifier(config.hidden, config.num_classes,
                                               config.classifier_dropout, dtype)
                  if config.has_classes else None),
      invariant_embedding=embedding,
      equivariant_encoder=EquivariantEncoder(config.hidden, config.z_dim,
                                             features=_encoder_features[config.arch](),
                                             matmul_dtype=dtype),
      decoder=family.Decoder(config.hidden, tuple(config.image_shape), dtype),
  )


__all__ = ["Networks", "build", "ConcatDense", "InvariantEmbedding", "OneHotEmbedding"]
