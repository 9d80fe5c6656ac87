"""The four networks of the IE-VAE, as flax modules, chosen by architecture."""

from typing import NamedTuple

import flax.linen as nn

from ievae_jax.config import ModelConfig
from ievae_jax.nets import conv, mlp
from ievae_jax.nets.layers import ConcatDense, EquivariantEncoder, InvariantEmbedding


class Networks(NamedTuple):
  classifier: nn.Module            # c(x): logits of q(y | x)
  invariant_embedding: nn.Module   # g(y) = r_y
  equivariant_encoder: nn.Module   # q(z | x, r_y) or q(z | x)
  decoder: nn.Module               # f([r_y, z]): logits of p(x | y, z)


# Image features of the equivariant encoder, per architecture (see EquivariantEncoder).
_encoder_features = {"mlp": lambda: mlp.flatten_image, "conv": conv.ConvTrunk}


def build(config: ModelConfig) -> Networks:
  family = {"mlp": mlp, "conv": conv}[config.arch]
  return Networks(
      classifier=family.Classifier(config.hidden, config.num_classes),
      invariant_embedding=InvariantEmbedding(config.hidden, config.r_dim),
      equivariant_encoder=EquivariantEncoder(config.hidden, config.z_dim,
                                             features=_encoder_features[config.arch]()),
      decoder=family.Decoder(config.hidden, tuple(config.image_shape)),
  )


__all__ = ["Networks", "build", "ConcatDense", "InvariantEmbedding"]
