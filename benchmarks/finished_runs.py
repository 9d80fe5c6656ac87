"""Finished runs named on a benchmark's command line (`name=workdir` pairs), each with its
settings, its own data splits and its trained parameters. No flags here, so that any
benchmark (and the test session) can import it."""

import contextlib
import logging
from typing import Iterator, List, NamedTuple, Optional, Tuple

from absl import app

from ievae_jax import checkpointing, data, model
from ievae_jax.config import TrainConfig


class FinishedRun(NamedTuple):
  name: str
  workdir: str
  config: TrainConfig
  splits: data.Splits    # rebuilt from the config: the run's labels, validation and test
  params: model.Params   # of the latest checkpoint, or of `step`


def name_and_workdir(pair: str) -> Tuple[str, str]:
  """Splits one `name=workdir` pair of a command line; a malformed one stops the benchmark
  with a usage error that names it."""
  name, sep, workdir = pair.partition("=")
  if not (name and sep and workdir):
    raise app.UsageError(f"{pair!r} is not name=workdir: give each run as name=workdir.")
  return name, workdir


@contextlib.contextmanager
def _absl_warnings_only():
  """orbax logs every restore at INFO through absl; quiet it for the restore alone."""
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.WARNING)
  try:
    yield
  finally:
    absl_logger.setLevel(level)


def finished_runs(pairs: List[str], data_dir: Optional[str],
                  step: Optional[int] = None) -> Iterator[FinishedRun]:
  """One FinishedRun per `name=workdir` pair, in order; each dataset is read once."""
  arrays_by_dataset = {}
  for pair in pairs:
    name, workdir = name_and_workdir(pair)
    config = checkpointing.saved_config(workdir)
    if config.dataset not in arrays_by_dataset:
      arrays_by_dataset[config.dataset] = data.load(config.dataset, data_dir)
    splits = data.make_splits(arrays_by_dataset[config.dataset], config.model.num_classes,
                              config.labels, config.validation_size, config.labelled_subset_seed)
    with _absl_warnings_only():
      params = checkpointing.load(workdir, step)
    yield FinishedRun(name, workdir, config, splits, params)
