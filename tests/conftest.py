"""Shared fixtures: the real MNIST IDX files and small IDX directories cut from them."""

import gzip
import os
import struct

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.environ.get("IEVAE_TEST_DATA_DIR",
                           os.path.join(REPO, "..", "shared", "data", "mnist"))


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes a uint8 array as a gzip-compressed IDX file."""
  header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


@pytest.fixture(scope="session")
def mnist_dir():
  if not os.path.isfile(os.path.join(MNIST_DIR, "train-images-idx3-ubyte.gz")):
    message = (f"MNIST IDX files not found at {MNIST_DIR}; set IEVAE_TEST_DATA_DIR to a "
               f"directory holding them.")
    if os.environ.get("CI"):
      pytest.fail(message)
    pytest.skip(message)
  return MNIST_DIR


@pytest.fixture(scope="session")
def mnist_arrays(mnist_dir):
  from ievae_jax import data
  return data.load_idx(mnist_dir, "mnist")


@pytest.fixture(scope="session")
def small_mnist_dir(tmp_path_factory, mnist_arrays):
  """A directory of IDX files holding 600 training and 200 test images of MNIST."""
  directory = tmp_path_factory.mktemp("small_mnist")
  write_small_idx(str(directory), mnist_arrays, 600, 200)
  return str(directory)


def write_small_idx(directory, arrays, num_train, num_test):
  write_idx(os.path.join(directory, "train-images-idx3-ubyte.gz"),
            arrays["train_images"][:num_train, ..., 0])
  write_idx(os.path.join(directory, "train-labels-idx1-ubyte.gz"),
            arrays["train_labels"][:num_train])
  write_idx(os.path.join(directory, "t10k-images-idx3-ubyte.gz"),
            arrays["test_images"][:num_test, ..., 0])
  write_idx(os.path.join(directory, "t10k-labels-idx1-ubyte.gz"),
            arrays["test_labels"][:num_test])


def tiny_model_config(**overrides):
  from ievae_jax.config import ModelConfig
  return ModelConfig(**{"hidden": 32, "z_dim": 3, "r_dim": 4, **overrides})


def tiny_train_config(**overrides):
  from ievae_jax.config import TrainConfig
  model = overrides.pop("model", tiny_model_config())
  base = dict(model=model, labels=20, validation_size=100, num_steps=4, batch_size=10,
              labelled_batch_size=10, log_every=2, eval_every=2, checkpoint_every=2)
  return TrainConfig(**{**base, **overrides})


def pytest_configure(config):
  """Fast compiles: fewer XLA passes, and a compilation cache shared with subprocesses."""
  import tempfile
  import jax
  cache = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                                os.path.join(tempfile.gettempdir(), "ievae_jax_test_cache"))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_disable_most_optimizations", True)
