"""An independent classifier that scores transferred images (`evaluation.transfer_accuracy`).

It shares nothing with the model under evaluation: its own convolutional network
(two 3x3 convolutions of 32 and 64 channels with 2x2 max-pooling, a 128-unit dense
layer), trained with Adam on every labelled training image of the dataset in grey
levels (with a random +-2 pixel shift, so that it judges shapes rather than exact
positions). It is trained once per dataset and cached in a directory as
`params.msgpack` plus `info.json` (its test accuracy and settings), both written
atomically.
"""

import json
import os
from typing import Callable

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ievae_jax import checkpointing

PARAMS_FILE, INFO_FILE = "params.msgpack", "info.json"


class ConvClassifier(nn.Module):
  """(N, H, W, C) grey levels in [0, 1] -> (N, K) logits."""
  num_classes: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for features in (32, 64):
      x = nn.relu(nn.Conv(features, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes)(x)


def _shift(key: jax.Array, x: jnp.ndarray, max_shift: int = 2) -> jnp.ndarray:
  """Rolls each image by a random offset in [-max_shift, max_shift] along H and W."""
  offsets = jax.random.randint(key, (x.shape[0], 2), -max_shift, max_shift + 1)
  return jax.vmap(lambda im, o: jnp.roll(im, (o[0], o[1]), axis=(0, 1)))(x, offsets)


def train(images: np.ndarray, labels: np.ndarray, num_classes: int, steps: int = 1500,
          batch_size: int = 128, seed: int = 0):
  """Trains the classifier on uint8 images (N, H, W, C) and labels (N,); returns params."""
  net = ConvClassifier(num_classes)
  key = jax.random.key(seed)
  params = net.init(key, jnp.zeros((1,) + images.shape[1:]))["params"]
  optimizer = optax.adam(optax.schedules.cosine_decay_schedule(1e-3, steps))
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, x, y, key):
    x = _shift(key, x.astype(jnp.float32) / 255.0)
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        net.apply({"params": p}, x), y).mean()
    grads = jax.grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  order = np.random.default_rng(seed).permutation(len(images))
  for t in range(steps):
    start = (t * batch_size) % (len(images) - batch_size + 1)
    idx = order[start:start + batch_size]
    params, opt_state = step(params, opt_state, images[idx], labels[idx], jax.random.fold_in(key, t))
  return params


def scorer(params, num_classes: int) -> Callable[[np.ndarray], np.ndarray]:
  """pixel intensities (M, H, W, C) in [0, 1] -> predicted classes (M,)."""
  net = ConvClassifier(num_classes)
  predict = jax.jit(lambda x: jnp.argmax(net.apply({"params": params}, x), -1))

  def score(x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(predict(jnp.asarray(x[i:i + 1000], jnp.float32)))
                           for i in range(0, len(x), 1000)])
  return score


def load_or_train(directory: str, arrays: dict, num_classes: int, steps: int = 1500, log=print):
  """The cached classifier in `directory`, trained first if it is not there.

  arrays: as from `data.load` (train_images/labels to fit, test_images/labels to
  report its accuracy). Returns (score function, info dict).
  """
  params_path, info_path = (os.path.join(directory, f) for f in (PARAMS_FILE, INFO_FILE))
  like = ConvClassifier(num_classes).init(
      jax.random.key(0), jnp.zeros((1,) + arrays["train_images"].shape[1:]))["params"]
  if os.path.exists(params_path) and os.path.exists(info_path):
    with open(params_path, "rb") as f:
      params = flax.serialization.from_bytes(like, f.read())
    with open(info_path) as f:
      info = json.load(f)
    return scorer(params, num_classes), info
  log(f"Training the reference classifier (once; cached in {directory}) ...")
  params = train(arrays["train_images"], arrays["train_labels"], num_classes, steps=steps)
  score = scorer(params, num_classes)
  accuracy = float(np.mean(score(arrays["test_images"].astype(np.float32) / 255.0)
                           == arrays["test_labels"]))
  info = {"test_accuracy": accuracy, "architecture": "conv32-pool-conv64-pool-dense128",
          "train_examples": int(len(arrays["train_images"])), "steps": steps, "batch_size": 128}
  os.makedirs(directory, exist_ok=True)
  tmp = params_path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(flax.serialization.to_bytes(params))
  os.replace(tmp, params_path)
  checkpointing.write_json_atomically(info_path, info)
  log(f"Reference classifier: test accuracy {accuracy:.4f}.")
  return score, info
