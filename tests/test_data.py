"""Input: the IDX reader on real and corrupt files, TFDS through its mocks, the splits."""

import gzip
import os
import shutil

import numpy as np
import pytest

from ievae_jax import data
from tests.conftest import write_idx, write_small_idx


def test_idx_reader_on_the_real_files(mnist_arrays):
  assert mnist_arrays["train_images"].shape == (60000, 28, 28, 1)
  assert mnist_arrays["test_images"].shape == (10000, 28, 28, 1)
  assert mnist_arrays["train_images"].dtype == np.uint8
  assert mnist_arrays["train_images"].mean() == pytest.approx(33.318, abs=1e-3)
  np.testing.assert_array_equal(np.bincount(mnist_arrays["train_labels"]),
                                [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])


def test_idx_round_trip(tmp_path):
  array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  write_idx(str(tmp_path / "a.gz"), array)
  np.testing.assert_array_equal(data.read_idx(str(tmp_path / "a.gz")), array)


def _corrupt(tmp_path, name, content: bytes, compress=True):
  path = str(tmp_path / name)
  if compress:
    with gzip.open(path, "wb") as f:
      f.write(content)
  else:
    with open(path, "wb") as f:
      f.write(content)
  return path


@pytest.mark.parametrize("content,compress,message", [
    (b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") * 3 + b"\x01" * 5, True, "truncated or corrupt"),
    (b"\x12\x34\x08\x01" + (3).to_bytes(4, "big") + b"abc", True, "magic number"),
    (b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc", True, "unsigned bytes"),
    (b"\x00\x00\x08\x03\x00\x00", True, "truncated IDX header"),
    (b"not gzip at all", False, "not a readable gzip file"),
])
def test_idx_reader_rejects_corrupt_files(tmp_path, content, compress, message):
  path = _corrupt(tmp_path, "bad.gz", content, compress)
  with pytest.raises(data.DataError, match=message):
    data.read_idx(path)


def test_truncated_gzip_is_reported(tmp_path, mnist_dir):
  src = os.path.join(mnist_dir, "t10k-labels-idx1-ubyte.gz")
  raw = open(src, "rb").read()
  path = tmp_path / "t10k-labels-idx1-ubyte.gz"
  path.write_bytes(raw[: len(raw) // 2])
  with pytest.raises(data.DataError, match="truncated or corrupt"):
    data.read_idx(str(path))


def test_missing_files_and_directory(tmp_path, small_mnist_dir):
  with pytest.raises(data.DataError, match="does not exist"):
    data.load_idx(str(tmp_path / "nowhere"), "mnist")
  partial = tmp_path / "partial"
  shutil.copytree(small_mnist_dir, partial)
  os.remove(partial / "t10k-images-idx3-ubyte.gz")
  with pytest.raises(data.DataError, match="lacks t10k-images-idx3-ubyte.gz"):
    data.load_idx(str(partial), "mnist")


def test_dataset_subfolder_is_found(tmp_path, small_mnist_dir):
  shutil.copytree(small_mnist_dir, tmp_path / "mnist")
  arrays = data.load_idx(str(tmp_path), "mnist")
  assert arrays["train_images"].shape == (600, 28, 28, 1)


def test_labels_out_of_range_and_mismatched_counts(tmp_path, mnist_arrays):
  write_small_idx(str(tmp_path), mnist_arrays, 50, 20)
  labels = mnist_arrays["train_labels"][:50].copy()
  labels[3] = 12
  write_idx(str(tmp_path / "train-labels-idx1-ubyte.gz"), labels)
  with pytest.raises(data.DataError, match="labels go up to 12"):
    data.load_idx(str(tmp_path), "mnist")
  write_idx(str(tmp_path / "train-labels-idx1-ubyte.gz"), mnist_arrays["train_labels"][:49])
  with pytest.raises(data.DataError, match="do not match"):
    data.load_idx(str(tmp_path), "mnist")


def test_tfds_source_through_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
    arrays = data.load("mnist")
  assert arrays["train_images"].shape == (30, 28, 28, 1)
  assert arrays["train_images"].dtype == np.uint8
  assert arrays["test_labels"].shape == (30,)
  assert arrays["train_labels"].max() < 10


def test_balanced_labelled_subset_and_disjoint_splits(mnist_arrays):
  splits = data.make_splits(mnist_arrays, 10, labels=100, validation_size=5000, seed=3)
  np.testing.assert_array_equal(np.bincount(splits.labelled_labels, minlength=10), [10] * 10)
  assert len(splits.labelled_images) + len(splits.unlabelled_images) == 55000
  assert len(splits.validation_images) == 5000
  # Disjoint: compare image bytes (MNIST's training images are distinct up to a few duplicates).
  key = lambda imgs: {img.tobytes() for img in imgs}
  labelled, validation = key(splits.labelled_images), key(splits.validation_images)
  assert not labelled & validation
  assert not labelled & key(splits.unlabelled_images[:20000])
  other = data.make_splits(mnist_arrays, 10, labels=100, validation_size=5000, seed=4)
  again = data.make_splits(mnist_arrays, 10, labels=100, validation_size=5000, seed=3)
  np.testing.assert_array_equal(other.validation_labels, splits.validation_labels)
  assert not np.array_equal(other.labelled_images, splits.labelled_images)
  np.testing.assert_array_equal(again.labelled_images, splits.labelled_images)


def test_too_many_labels_is_refused(mnist_arrays):
  with pytest.raises(data.DataError, match="exceeds the 55000 training examples"):
    data.make_splits(mnist_arrays, 10, labels=60000, validation_size=5000, seed=0)


def test_batches_walk_through_epochs_deterministically():
  n, batch = 23, 5
  steps = [data.batch_indices(n, batch, seed=1, stream=2, step=t) for t in range(46)]
  flat = np.concatenate(steps)
  for epoch in range(10):
    np.testing.assert_array_equal(np.sort(flat[epoch * n:(epoch + 1) * n]), np.arange(n))
  np.testing.assert_array_equal(steps[17], data.batch_indices(n, batch, 1, 2, 17))
  assert not np.array_equal(steps[17], data.batch_indices(n, batch, 2, 2, 17))
