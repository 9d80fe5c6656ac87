"""Input: MNIST-like datasets as uint8 arrays, splits, and deterministic batches.

Two sources:
  * a directory of the standard IDX .gz files (train-images-idx3-ubyte.gz,
    train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
    t10k-labels-idx1-ubyte.gz), read with no other dependency; the directory may
    also hold them under a subfolder named after the dataset;
  * TensorFlow Datasets' `tfds.data_source` (no TensorFlow needed), which reads
    prepared data or downloads and prepares it where the machine can.

Splits: the validation set (default 5,000 images) is carved from the training
split with a fixed permutation (seed 0, so every training seed sees the same
validation set); never from test. From the rest, the labelled subset holds exactly
labels / K examples of each class chosen by the run's seed, and every other
training example is the unlabelled pool.

Batches for step t derive from (seed, t) alone: each stream (labelled,
unlabelled) walks through per-epoch permutations drawn from (seed, stream, epoch),
so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import struct
import zlib
from typing import Dict, Optional, Tuple

import numpy as np

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10}
_UBYTE = 0x08


class DataError(ValueError):
  """Data that cannot be used; the message names the file and the fix."""


def read_idx(path: str) -> np.ndarray:
  """Reads one gzip-compressed IDX file of unsigned bytes into an array."""
  if not os.path.isfile(path):
    raise DataError(f"Data file {path} does not exist; download it or point --data_dir at the "
                    f"directory that holds the four IDX .gz files.")
  try:
    with gzip.open(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"Data file {path} is not a readable gzip file ({e}); it is probably "
                    f"truncated or corrupt: download it again.") from None
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    raise DataError(f"Data file {path} does not start with an IDX magic number; it is not an "
                    f"IDX file: download it again.")
  dtype_code, ndim = raw[2], raw[3]
  if dtype_code != _UBYTE:
    raise DataError(f"Data file {path} holds IDX type 0x{dtype_code:02x}, expected unsigned "
                    f"bytes (0x08); use the standard MNIST-format files.")
  header = 4 + 4 * ndim
  if ndim == 0 or len(raw) < header:
    raise DataError(f"Data file {path} has a truncated IDX header; download it again.")
  shape = struct.unpack(f">{ndim}I", raw[4:header])
  expected = header + int(np.prod(shape))
  if len(raw) != expected:
    raise DataError(f"Data file {path} holds {len(raw) - header} data bytes but its header "
                    f"announces shape {shape} ({expected - header} bytes); it is truncated or "
                    f"corrupt: download it again.")
  return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx_directory(directory: str, dataset: str) -> str:
  if not os.path.isdir(directory):
    raise DataError(f"Data directory {directory} does not exist; pass --data_dir (or set "
                    f"IEVAE_DATA_DIR) to a directory holding the four IDX .gz files.")
  for candidate in (directory, os.path.join(directory, dataset)):
    if all(os.path.isfile(os.path.join(candidate, f)) for f in IDX_FILES.values()):
      return candidate
  missing = [f for f in IDX_FILES.values() if not os.path.isfile(os.path.join(directory, f))]
  raise DataError(f"Data directory {directory} lacks {', '.join(missing)}; it needs all of "
                  f"{', '.join(IDX_FILES.values())} (or a '{dataset}' subfolder holding them).")


def _check_pair(images: np.ndarray, labels: np.ndarray, num_classes: int, what: str):
  if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
    raise DataError(f"The {what} files do not match: images of shape {images.shape} and labels "
                    f"of shape {labels.shape}; expected (N, H, W) and (N,). Download them again.")
  if labels.size and labels.max() >= num_classes:
    raise DataError(f"The {what} labels go up to {labels.max()}, beyond the {num_classes} "
                    f"classes of this dataset; check --dataset and the files.")


def load_idx(directory: str, dataset: str) -> Dict[str, np.ndarray]:
  """Reads train and test images (N, H, W, 1) uint8 and labels (N,) from IDX files."""
  directory = _find_idx_directory(directory, dataset)
  arrays = {k: read_idx(os.path.join(directory, f)) for k, f in IDX_FILES.items()}
  for split in ("train", "test"):
    _check_pair(arrays[f"{split}_images"], arrays[f"{split}_labels"], NUM_CLASSES[dataset],
                f"{split}")
    arrays[f"{split}_images"] = arrays[f"{split}_images"][..., None]
  return arrays


def load_tfds(dataset: str, data_dir: Optional[str] = None) -> Dict[str, np.ndarray]:
  """Reads train and test splits through `tfds.data_source` (random access, no TF)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  arrays = {}
  for split in ("train", "test"):
    source = tfds.data_source(dataset, split=split, data_dir=data_dir)
    indices = list(range(len(source)))
    # __getitems__ reads a batch of records at once from array_record files; the
    # mocked sources of tfds.testing only index one at a time.
    try:
      examples = source.__getitems__(indices)
    except (AttributeError, TypeError):
      examples = [source[i] for i in indices]
    arrays[f"{split}_images"] = np.stack([np.asarray(e["image"], np.uint8) for e in examples])
    arrays[f"{split}_labels"] = np.asarray([e["label"] for e in examples], np.uint8)
    _check_pair(arrays[f"{split}_images"][..., 0], arrays[f"{split}_labels"],
                NUM_CLASSES[dataset], split)
  return arrays


def load(dataset: str, data_dir: Optional[str] = None,
         tfds_data_dir: Optional[str] = None) -> Dict[str, np.ndarray]:
  """The dataset from IDX files in `data_dir` if given, else through TFDS."""
  if dataset not in NUM_CLASSES:
    raise DataError(f"Unknown dataset {dataset!r}; use one of {', '.join(NUM_CLASSES)}.")
  if data_dir:
    return load_idx(data_dir, dataset)
  return load_tfds(dataset, tfds_data_dir)


@dataclasses.dataclass(frozen=True)
class Splits:
  """Images (N, H, W, C) uint8 and labels (N,) for each part of the data."""
  labelled_images: np.ndarray
  labelled_labels: np.ndarray
  unlabelled_images: np.ndarray     # empty for supervised training
  validation_images: np.ndarray
  validation_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int

  @property
  def num_train(self) -> int:
    return len(self.labelled_images) + len(self.unlabelled_images)


def balanced_subset(labels: np.ndarray, per_class: int, num_classes: int,
                    rng: np.random.Generator) -> np.ndarray:
  """Indices of exactly `per_class` examples of each class, drawn by `rng`, sorted."""
  chosen = []
  for k in range(num_classes):
    members = np.flatnonzero(labels == k)
    if len(members) < per_class:
      raise DataError(f"Class {k} has only {len(members)} training examples, fewer than the "
                      f"{per_class} per class that --labels asks for; lower --labels.")
    chosen.append(rng.choice(members, per_class, replace=False))
  return np.sort(np.concatenate(chosen))


def check_arrays(arrays: Dict[str, np.ndarray], num_classes: int) -> None:
  """Refuses arrays that are not what `load` returns: uint8 images (N, H, W, C) in
  [0, 255] (so no NaN can enter) with integer labels (N,) in [0, K)."""
  for split in ("train", "test"):
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
      raise DataError(f"{split} images must be a uint8 array (N, H, W, C) with values in "
                      f"[0, 255], got {getattr(images, 'dtype', type(images))} of shape "
                      f"{getattr(images, 'shape', '?')}; convert float images with "
                      f"np.round(255 * x).astype(np.uint8).")
    _check_pair(images[..., 0], np.asarray(labels), num_classes, split)
    if not np.issubdtype(np.asarray(labels).dtype, np.integer):
      raise DataError(f"{split} labels must be integers, got {np.asarray(labels).dtype}.")


def make_splits(arrays: Dict[str, np.ndarray], num_classes: int, labels: Optional[int],
                validation_size: int, seed: int) -> Splits:
  """Validation, labelled and unlabelled parts of the training split (see module doc)."""
  check_arrays(arrays, num_classes)
  images, targets = arrays["train_images"], arrays["train_labels"]
  if validation_size >= len(images):
    raise DataError(f"--validation_size={validation_size} leaves no training data out of "
                    f"{len(images)} examples; lower it.")
  order = np.random.default_rng(0).permutation(len(images))
  val_idx, train_idx = order[:validation_size], np.sort(order[validation_size:])
  if labels is None:
    labelled_idx, unlabelled_idx = train_idx, train_idx[:0]
  else:
    if labels > len(train_idx):
      raise DataError(f"--labels={labels} exceeds the {len(train_idx)} training examples left "
                      f"after the validation split; lower --labels or --validation_size.")
    rng = np.random.default_rng([seed, 1])
    picked = balanced_subset(targets[train_idx], labels // num_classes, num_classes, rng)
    labelled_idx = train_idx[picked]
    unlabelled_idx = np.delete(train_idx, picked)
  return Splits(
      labelled_images=images[labelled_idx], labelled_labels=targets[labelled_idx],
      unlabelled_images=images[unlabelled_idx],
      validation_images=images[val_idx], validation_labels=targets[val_idx],
      test_images=arrays["test_images"], test_labels=arrays["test_labels"],
      num_classes=num_classes)


@functools.lru_cache(maxsize=8)
def _epoch_permutation(n: int, seed: int, stream: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, stream, epoch]).permutation(n)


def batch_indices(n: int, batch_size: int, seed: int, stream: int, step: int) -> np.ndarray:
  """Indices into a set of n examples for `step`: a walk through per-epoch
  permutations drawn from (seed, stream, epoch). Batches may straddle epochs."""
  chunks, position, end = [], step * batch_size, (step + 1) * batch_size
  while position < end:
    epoch, offset = divmod(position, n)
    take = min(end - position, n - offset)
    chunks.append(_epoch_permutation(n, seed, stream, epoch)[offset:offset + take])
    position += take
  return np.concatenate(chunks)


LABELLED_STREAM, UNLABELLED_STREAM = 2, 3


def training_batch(splits: Splits, step: int, seed: int, labelled_batch_size: int,
                   batch_size: int) -> Tuple[dict, Optional[dict]]:
  """Host batches for `step`: labelled {"image", "label"} and unlabelled {"image"}
  (None in supervised runs), images uint8 (B, H, W, C)."""
  idx = batch_indices(len(splits.labelled_images), labelled_batch_size, seed, LABELLED_STREAM,
                      step)
  labelled = {"image": splits.labelled_images[idx],
              "label": splits.labelled_labels[idx].astype(np.int32)}
  if not len(splits.unlabelled_images):
    return labelled, None
  idx = batch_indices(len(splits.unlabelled_images), batch_size, seed, UNLABELLED_STREAM, step)
  return labelled, {"image": splits.unlabelled_images[idx]}
