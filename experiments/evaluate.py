r"""Measures a trained run: writes RUN/eval.json and figures under RUN/figures/.

  python -m experiments.evaluate --workdir=runs/<run> --data_dir=../shared/data/mnist

eval.json keys (see ievae_jax/evaluation.py for the definitions):
  test_error                     argmax q(y | x) on the test set (null for the VAE)
  z_probe_accuracy               linear probe from the mean of q(z | x, r_y), y the
                                 classifier's prediction (never the label), fitted on the
                                 training split, scored on the test set; chance is 1/K
  r_within_class_variance_share  of encode_invariant(x) over the test set (null for the VAE)
  transfer_accuracy              transfer(x, y') for every test x and y' != its label,
                                 judged by an independent cached classifier (null for the VAE)
  iw_log_likelihood              importance-weighted bound on test log p(x), nats, k samples,
                                 on a fixed binarisation of the test images (seed 0)
Figures: class_swap.png, reconstructions.png, embeddings.png, and traversal.png for
d_z = 2 runs.
"""

import json
import logging
import os
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from ievae_jax import (checkpointing, config as config_lib, data, evaluation, figures, model,
                       reference_classifier)

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory of a trained run (holds config.json).")
flags.DEFINE_string("data_dir", None, "Directory of the IDX .gz files; default: the run's own "
                    "--data_dir, else $IEVAE_DATA_DIR, else TFDS.")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory (TFDS's default if unset).")
flags.DEFINE_integer("iw_samples", 1000, "Importance samples k per test image.")
flags.DEFINE_integer("iw_examples", 0, "Test images for the log-likelihood bound (0: all).")
flags.DEFINE_integer("transfer_examples", 0, "Test images for the transfer accuracy (0: all).")
flags.DEFINE_string("reference_classifier_dir", None, "Cache of the independent classifier "
                    "that scores transfers; default runs/reference_classifier-<dataset>.")
flags.DEFINE_integer("reference_steps", 1500, "Training steps of the reference classifier "
                     "(used only when it is not cached yet).")
flags.DEFINE_integer("seed", 0, "Seed of the importance samples and the test binarisation.")

log = logging.getLogger("ievae_jax")


def _check_flags():
  if not FLAGS.workdir:
    raise config_lib.ConfigError("--workdir is required: the directory of a trained run.")
  if not os.path.exists(os.path.join(FLAGS.workdir, checkpointing.CONFIG_FILE)):
    raise config_lib.ConfigError(f"{FLAGS.workdir} holds no {checkpointing.CONFIG_FILE}: it is "
                                 f"not a run directory of ievae_jax; train one first.")
  for name in ("iw_samples", "reference_steps"):
    if getattr(FLAGS, name) < 1:
      raise config_lib.ConfigError(f"--{name} must be >= 1, got {getattr(FLAGS, name)}.")
  for name in ("iw_examples", "transfer_examples"):
    if getattr(FLAGS, name) < 0:
      raise config_lib.ConfigError(f"--{name} must be >= 0 (0: all), got {getattr(FLAGS, name)}.")


@jax.jit
def _representations(params, images):
  """(mean of q(z | x, r_yhat), encode_invariant(x)) for uint8 images."""
  x = evaluation.grey(images)
  z = model.encode_equivariant(params, x).mean()
  if not params.config.has_classes:
    return z, z
  return z, model.encode_invariant(params, x)


def _first_of_each_class(labels, num_classes, per_class=1):
  return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(num_classes)])


def _figures(params, splits, z_test, r_test, directory):
  os.makedirs(directory, exist_ok=True)
  cfg = params.config
  k = cfg.num_classes
  idx = _first_of_each_class(splits.test_labels, k)
  x = evaluation.grey(splits.test_images[idx])
  written = []
  if cfg.has_classes:
    y = splits.test_labels[idx]
    swapped = evaluation.transfers(params, splits.test_images[idx], y, k)
    grid = np.concatenate([np.asarray(x)[:, None], np.asarray(swapped)], axis=1)
    figures.save_grid(grid, os.path.join(directory, "class_swap.png"),
                      "class swap: input, then its z decoded with each class",
                      row_labels=[str(int(c)) for c in y],
                      col_labels=["input"] + [str(c) for c in range(k)])
    written.append("class_swap.png")
  posterior = model.encode_equivariant(params, x)
  y_hat = jnp.argmax(model.classify(params, x), -1) if cfg.has_classes else None
  r = model.invariant_representation(params, y_hat) if cfg.has_classes else None
  recon = model.decode(params, r, posterior.mean()).mean()
  figures.save_grid(np.stack([np.asarray(x), np.asarray(recon)]),
                    os.path.join(directory, "reconstructions.png"),
                    "top: test images; bottom: reconstructions (mean z, predicted class)",
                    row_labels=["input", "recon"])
  written.append("reconstructions.png")
  if cfg.z_dim == 2:
    values = np.linspace(-2.0, 2.0, 8)
    zz = np.stack(np.meshgrid(values, values[::-1]), -1)                 # (G, G, 2)
    if cfg.has_classes:
      images = model.generate(params, jnp.arange(k)[:, None, None], jnp.asarray(zz)[None]).mean()
    else:
      images = model.decode(params, None, jnp.asarray(zz)).mean()[None]
    figures.save_traversals(np.asarray(images), os.path.join(directory, "traversal.png"), values,
                            "decoded grid of the 2-D equivariant latent")
    written.append("traversal.png")
  panels = [("mean of q(z | x, r_y)" if cfg.has_classes else "mean of q(z | x)", z_test)]
  if cfg.has_classes:
    panels.append(("encode_invariant(x)", r_test))
  figures.save_embeddings(panels, splits.test_labels, os.path.join(directory, "embeddings.png"))
  written.append("embeddings.png")
  return written


def evaluate(workdir, data_dir, tfds_data_dir, iw_samples, iw_examples, transfer_examples,
             reference_dir, seed, reference_steps=1500):
  """Computes every measure of the module docstring; returns the eval.json dict."""
  with open(os.path.join(workdir, checkpointing.CONFIG_FILE)) as f:
    config = config_lib.TrainConfig.from_dict(json.load(f))
  params = checkpointing.load(workdir)
  cfg = params.config
  arrays = data.load(config.dataset, data_dir or config.data_dir or os.environ.get(
      "IEVAE_DATA_DIR") or None, tfds_data_dir or config.tfds_data_dir)
  # The whole training split with its labels, for the probe (same validation carve-out).
  splits = data.make_splits(arrays, cfg.num_classes, None, config.validation_size, config.seed)
  timings, results = {}, {"workdir": workdir, "model": cfg.kind, "routing": cfg.routing,
                           "z_dim": cfg.z_dim, "dataset": config.dataset,
                           "labels": config.labels, "seed": config.seed}
  results["steps"] = _saved_steps(workdir)

  t = time.time()
  results["test_error"] = (evaluation.classification_error(params, splits.test_images,
                                                           splits.test_labels)
                           if cfg.has_classes else None)
  features = lambda images: evaluation.batched(
      lambda b: jnp.concatenate(_representations(params, b), -1), images)
  train_zr, test_zr = features(splits.labelled_images), features(splits.test_images)
  z_train, z_test = train_zr[:, :cfg.z_dim], test_zr[:, :cfg.z_dim]
  r_test = test_zr[:, cfg.z_dim:]
  probe = evaluation.fit_linear_probe(z_train, splits.labelled_labels, cfg.num_classes)
  results["z_probe_accuracy"] = evaluation.probe_accuracy(probe, z_test, splits.test_labels)
  results["z_probe_train_accuracy"] = evaluation.probe_accuracy(probe, z_train,
                                                                splits.labelled_labels)
  results["r_within_class_variance_share"] = (evaluation.within_class_variance_share(
      r_test, splits.test_labels) if cfg.has_classes else None)
  timings["classification_probe_variance_s"] = time.time() - t

  t = time.time()
  if cfg.has_classes:
    score, info = reference_classifier.load_or_train(
        reference_dir or os.path.join("runs", f"reference_classifier-{config.dataset}"),
        arrays, cfg.num_classes, steps=reference_steps, log=log.info)
    n = transfer_examples or len(splits.test_images)
    transfer = evaluation.transfer_accuracy(params, splits.test_images[:n],
                                            splits.test_labels[:n], score)
    results["transfer_accuracy"] = transfer["transfer_accuracy"]
    results["transfer_accuracy_per_target_class"] = transfer["per_target_class"]
    results["transfer_examples"] = n
    results["reference_classifier_test_accuracy"] = info["test_accuracy"]
  else:
    results["transfer_accuracy"] = None
  timings["transfer_s"] = time.time() - t

  t = time.time()
  n = iw_examples or len(splits.test_images)
  key_binarise, key_iw = jax.random.split(jax.random.key(seed))
  binary = np.asarray(jax.random.bernoulli(
      key_binarise, splits.test_images[:n].astype(np.float32) / 255.0)).astype(np.float32)
  bounds = evaluation.importance_weighted_bound(params, binary, key_iw, iw_samples)
  results["iw_log_likelihood"] = float(np.mean(bounds))
  results["iw_samples"], results["iw_examples"] = iw_samples, n
  timings["iw_s"] = time.time() - t

  t = time.time()
  results["figures"] = _figures(params, splits, z_test, r_test,
                                os.path.join(workdir, "figures"))
  timings["figures_s"] = time.time() - t
  results["seconds"] = timings
  return results


def _saved_steps(workdir):
  path = os.path.join(workdir, "results.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f).get("steps")
  return None


def main(argv):
  del argv
  logging.getLogger("absl").setLevel(logging.WARNING)
  logging.getLogger("ievae_jax").setLevel(logging.INFO)
  try:
    _check_flags()
    results = evaluate(FLAGS.workdir, FLAGS.data_dir, FLAGS.tfds_data_dir, FLAGS.iw_samples,
                       FLAGS.iw_examples, FLAGS.transfer_examples,
                       FLAGS.reference_classifier_dir, FLAGS.seed, FLAGS.reference_steps)
  except (config_lib.ConfigError, data.DataError, FileNotFoundError) as e:
    if FLAGS.verbosity >= 1:
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  checkpointing.write_json_atomically(os.path.join(FLAGS.workdir, "eval.json"), results)
  summary = {k: results[k] for k in ("model", "test_error", "z_probe_accuracy",
                                     "r_within_class_variance_share", "transfer_accuracy",
                                     "iw_log_likelihood")}
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
