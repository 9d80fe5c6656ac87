"""Flags shared by the launchers, and the one call each launcher makes.

Every launcher defines the same flags (with its own defaults), turns them into a
`TrainConfig`, validates it before anything is compiled, and calls
`train_lib.train_and_evaluate`. Bad input ends the program with one sentence on
stderr and exit status 1; `--verbosity=1` shows the traceback instead.
"""

import hashlib
import json
import logging
import os
import sys
from typing import Optional

from absl import flags
import jax

import ievae_jax
from ievae_jax import config as config_lib
from ievae_jax import data
from ievae_jax import checkpointing

FLAGS = flags.FLAGS

# Defaults of the semi-supervised launcher (and of the sweep, which runs it many times):
# the settings chosen on the validation split (benchmarks/results/ACCURACY.md): cosine
# decay, alpha = 550 on the mean labelled cross-entropy (ten times 0.1 N / N_l at 100
# labels; fixed, so every label count trains with the same settings), a conv
# classifier beside the MLP encoder and decoder, 25,000 steps (better than 10,000
# on validation for each of 3 seeds at 100 labels) and a peak learning rate of 2e-3
# (lower mean validation error than 1e-3 over the 3 seeds at 25,000 steps; tenth pass).
SEMISUP_DEFAULTS = {"labels": 100, "num_steps": 25000, "lr_schedule": "cosine",
                    "learning_rate": 0.002, "alpha": 550.0, "classifier_arch": "conv",
                    "log_every": 500, "eval_every": 1000}

# The IE-VAE's d_z = 8: at 100 labels both 4 and 16 fell behind it on validation
# (benchmarks/results/ACCURACY.md, sixth and twenty-fifth passes). M2's d_z = 50 follows
# Kingma et al. 2014; the VAE gets the IE-VAE's d_z so that the comparison is "the same
# latent without the routing".
DEFAULT_Z_DIM = {"ievae": 8, "m2": 50, "vae": 8}


def define_flags(defaults: dict) -> None:
  """Defines the launcher flags; `defaults` overrides TrainConfig's defaults."""
  base = {**config_lib.TrainConfig().to_dict(), **config_lib.TrainConfig().model.__dict__,
          **defaults}
  flags.DEFINE_string("labels", str(base["labels"]),
                      "Labelled training examples (a multiple of the class count), or 'all'.")
  flags.DEFINE_string("dataset", base["dataset"], "mnist | fashion_mnist.")
  flags.DEFINE_string("data_dir", None, "Directory of the four IDX .gz files (offline input); "
                      "default: $IEVAE_DATA_DIR, else TFDS.")
  flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory (TFDS's default if unset).")
  flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, results.json). "
                      "Default: runs/<launcher>-<dataset>-labels<n>-seed<s>-<settings hash>, "
                      "so rerunning the same command resumes.")
  flags.DEFINE_integer("seed", base["seed"], "Random seed.")
  flags.DEFINE_integer("label_seed", None, "Seeds the choice of the labelled subset alone "
                       "(default: --seed). Keep it and vary --seed for restarts of one "
                       "labelled set.")
  flags.DEFINE_integer("num_steps", base["num_steps"], "Optimiser steps.")
  flags.DEFINE_integer("batch_size", base["batch_size"], "Unlabelled examples per step "
                       "(labelled examples per step in supervised runs).")
  flags.DEFINE_integer("labelled_batch_size", base["labelled_batch_size"],
                       "Labelled examples per step (semi-supervised runs).")
  flags.DEFINE_float("learning_rate", base["learning_rate"], "Adam learning rate.")
  flags.DEFINE_string("lr_schedule", base["lr_schedule"], "constant | cosine.")
  flags.DEFINE_string("alpha", None if base["alpha"] is None else str(base["alpha"]),
                      "Weight of the mean labelled cross-entropy: a number, or 'kingma' "
                      "(also when unset) for 0.1 * N / N_l, Kingma et al.'s alpha on batch "
                      "means.")
  flags.DEFINE_float("kl_weight", base["kl_weight"], "Weight of KL(q(z|.) || p(z)) in the "
                     "bound; 1 is the paper's ELBO.")
  flags.DEFINE_integer("augment_shift", base["augment_shift"], "Extension beyond the paper: "
                       "random translation of every training image by up to this many pixels "
                       "per axis; 0 (default) turns it off.")
  flags.DEFINE_float("augment_shear", base["augment_shear"], "Extension beyond the paper: "
                     "random horizontal shear (slant) of every training image by up to this "
                     "much (row offset per row from the middle); 0 (default) turns it off.")
  flags.DEFINE_float("augment_elastic", base["augment_elastic"], "Extension beyond the "
                     "paper: random elastic distortion of every training image (Simard et "
                     "al. 2003) with this scale alpha, smoothing width 4 pixels; 34 is their "
                     "MNIST setting, 0 (default) turns it off.")
  flags.DEFINE_float("consistency_weight", base["consistency_weight"], "Extension beyond the "
                     "paper (needs --augment_shift, --augment_shear, --augment_elastic or "
                     "--view_elastic): weight of KL(q(y|x) || q(y|x')) between two random "
                     "views of each unlabelled image (0: off).")
  flags.DEFINE_float("view_elastic", base["view_elastic"], "Extension beyond the paper "
                     "(needs --consistency_weight): elastic distortion of scale alpha of the "
                     "consistency view alone, in place of --augment_elastic (0: off).")
  flags.DEFINE_float("teacher_decay", base["teacher_decay"], "Extension beyond the paper: "
                     "--consistency_weight's target read by a mean teacher, an average of past "
                     "parameters with this decay per step (e.g. 0.999; 0: the model itself).")
  flags.DEFINE_float("balance_weight", base["balance_weight"], "Extension beyond the paper: "
                     "weight of KL(mean q(y|x) || p(y)) over each unlabelled batch, a pull "
                     "of the average prediction toward the class prior (0: off).")
  flags.DEFINE_float("vat_weight", base["vat_weight"], "Extension beyond the paper: weight "
                     "of virtual adversarial training on each unlabelled batch, "
                     "KL(q(y|x) || q(y|x + r_adv)) (0: off).")
  flags.DEFINE_float("vat_epsilon", base["vat_epsilon"], "L2 norm of --vat_weight's "
                     "adversarial perturbation of an image, pixels in [0, 1].")
  flags.DEFINE_float("generative_weight", base["generative_weight"], "Extension beyond the "
                     "paper: weight of KL(q(y|x) || q(y|x')) with x' drawn by the model in "
                     "x's predicted class (see --generative_view) (0: off).")
  flags.DEFINE_enum("generative_view", base["generative_view"], list(config_lib.GENERATIVE_VIEWS),
                    "--generative_weight's view: the decoded z of x itself, or of the image "
                    "before it in the batch (x's predicted class in another image's style).")
  flags.DEFINE_integer("generative_steps", base["generative_steps"], "--generative_weight "
                       "applies over the first this many steps, then is off (0: all run).")
  flags.DEFINE_float("entropy_weight", base["entropy_weight"], "Weight of H(q(y|x)) in the "
                     "unlabelled bound at step 0, annealed linearly to 1 (the paper's bound) "
                     "over --entropy_anneal_steps; above 1 softens early self-labelling.")
  flags.DEFINE_integer("entropy_anneal_steps", base["entropy_anneal_steps"],
                       "Steps over which --entropy_weight decays to 1 (0: held all run).")
  flags.DEFINE_bool("binarise", base["binarise"], "Draw binary pixels from the grey levels "
                    "each step (dynamic binarisation); --nobinarise uses the grey levels "
                    "themselves as Bernoulli targets.")
  flags.DEFINE_enum("classifier_input", base["classifier_input"], ["binary", "grey"],
                    "What q(y|x) reads in training: binary (the binarised x the likelihood "
                    "scores) or grey (the grey levels x was drawn from; what evaluation "
                    "classifies).")
  flags.DEFINE_string("model", base["kind"], "ievae (default) | m2 (Kingma et al. 2014's M2, "
                      "one-hot y) | vae (one latent, no class; unsupervised).")
  flags.DEFINE_integer("z_dim", None, "Size of the equivariant latent z; default "
                       + ", ".join(f"{d} ({k})" for k, d in DEFAULT_Z_DIM.items()) + ".")
  flags.DEFINE_integer("r_dim", base["r_dim"], "Size of the invariant representation r_y.")
  flags.DEFINE_integer("hidden", base["hidden"], "Hidden width of the networks.")
  flags.DEFINE_string("arch", base["arch"], "mlp | conv.")
  flags.DEFINE_string("classifier_arch", base["classifier_arch"],
                      "mlp | conv: the classifier's architecture (unset: --arch).")
  flags.DEFINE_float("classifier_dropout", base["classifier_dropout"],
                     "Dropout rate on the classifier's hidden features in training (0: none).")
  flags.DEFINE_enum("matmul_dtype", base["matmul_dtype"], list(config_lib.MATMUL_DTYPES),
                    "Dtype of the dense layers' matrix-product inputs (float32 accumulation; "
                    "weights, activations and loss stay float32). bfloat16 nearly halves "
                    "the MLP step on CPUs with AVX512-BF16 (README, Speed).")
  flags.DEFINE_string("routing", base["routing"],
                      "conditional: q(z | x, r_y) (default) | strict: q(z | x).")
  flags.DEFINE_integer("validation_size", base["validation_size"],
                       "Training examples held out for validation.")
  flags.DEFINE_integer("log_every", base["log_every"], "Steps between progress logs.")
  flags.DEFINE_integer("eval_every", base["eval_every"], "Steps between validation errors.")
  flags.DEFINE_integer("checkpoint_every", base["checkpoint_every"], "Steps between checkpoints.")
  flags.DEFINE_integer("keep_checkpoints", base["keep_checkpoints"], "Checkpoints kept.")
  flags.DEFINE_string("coordinator_address", None, "Multi-process runs: host:port of process "
                      "0 (default $JAX_COORDINATOR_ADDRESS). Unset: one process.")
  flags.DEFINE_integer("num_processes", None, "Multi-process runs: number of processes "
                       "(default $JAX_NUM_PROCESSES).")
  flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index "
                       "(default $JAX_PROCESS_ID).")


def initialize_distributed() -> None:
  """Starts jax.distributed when a coordinator is given (flag or environment).

  Every process runs the same command with its own --process_id; on CPU the
  collectives go through gloo. Raises ConfigError on an incomplete setting.
  """
  address = FLAGS.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if not address:
    return
  from_env = lambda name: int(os.environ[name]) if os.environ.get(name) else None
  num_processes = FLAGS.num_processes if FLAGS.num_processes is not None else from_env(
      "JAX_NUM_PROCESSES")
  process_id = FLAGS.process_id if FLAGS.process_id is not None else from_env("JAX_PROCESS_ID")
  if num_processes is None or process_id is None or not 0 <= process_id < num_processes:
    raise config_lib.ConfigError(
        f"--coordinator_address={address} needs --num_processes and a --process_id in "
        f"[0, num_processes), got {num_processes} and {process_id}.")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(address, num_processes, process_id)


def _labels_from_flag(value: str):
  if value.strip().lower() in ("all", "none"):
    return None
  try:
    return int(value)
  except ValueError:
    raise config_lib.ConfigError(
        f"--labels={value!r} is not a number; give a multiple of the class count or 'all'."
    ) from None


def _alpha_from_flag(value):
  if value is None or value.strip().lower() == "kingma":
    return None
  try:
    return float(value)
  except ValueError:
    raise config_lib.ConfigError(
        f"--alpha={value!r} is not a number; give a weight such as 550, or 'kingma' for "
        f"0.1 * N / N_l.") from None


def config_from_flags(supervised: bool, labels=None) -> config_lib.TrainConfig:
  """The run's TrainConfig, validated. Raises ConfigError naming a bad flag.

  labels: overrides --labels (the sweep passes each of its label counts).
  """
  if FLAGS.dataset not in data.NUM_CLASSES:
    raise config_lib.ConfigError(
        f"Unknown dataset {FLAGS.dataset!r}; use one of {', '.join(data.NUM_CLASSES)}.")
  if FLAGS.model not in config_lib.MODELS:
    raise config_lib.ConfigError(
        f"Unknown --model={FLAGS.model!r}; use one of {', '.join(config_lib.MODELS)}.")
  z_dim = DEFAULT_Z_DIM[FLAGS.model] if FLAGS.z_dim is None else FLAGS.z_dim
  model = config_lib.ModelConfig(
      num_classes=data.NUM_CLASSES[FLAGS.dataset], kind=FLAGS.model, arch=FLAGS.arch,
      classifier_arch=FLAGS.classifier_arch, z_dim=z_dim,
      r_dim=FLAGS.r_dim, hidden=FLAGS.hidden, routing=FLAGS.routing,
      classifier_dropout=FLAGS.classifier_dropout, matmul_dtype=FLAGS.matmul_dtype)
  if labels is None:
    labels = None if supervised else _labels_from_flag(FLAGS.labels)
  config = config_lib.TrainConfig(
      model=model, dataset=FLAGS.dataset,
      data_dir=FLAGS.data_dir or os.environ.get("IEVAE_DATA_DIR") or None,
      tfds_data_dir=FLAGS.tfds_data_dir, labels=labels,
      validation_size=FLAGS.validation_size, seed=FLAGS.seed,
      label_seed=FLAGS.label_seed, num_steps=FLAGS.num_steps,
      batch_size=FLAGS.batch_size,
      labelled_batch_size=FLAGS.batch_size if supervised else FLAGS.labelled_batch_size,
      learning_rate=FLAGS.learning_rate, lr_schedule=FLAGS.lr_schedule,
      alpha=_alpha_from_flag(FLAGS.alpha),
      kl_weight=FLAGS.kl_weight, augment_shift=FLAGS.augment_shift,
      augment_shear=FLAGS.augment_shear, augment_elastic=FLAGS.augment_elastic,
      consistency_weight=FLAGS.consistency_weight, view_elastic=FLAGS.view_elastic,
      teacher_decay=FLAGS.teacher_decay,
      balance_weight=FLAGS.balance_weight, vat_weight=FLAGS.vat_weight,
      vat_epsilon=FLAGS.vat_epsilon, generative_weight=FLAGS.generative_weight,
      generative_view=FLAGS.generative_view, generative_steps=FLAGS.generative_steps,
      binarise=FLAGS.binarise, classifier_input=FLAGS.classifier_input,
      entropy_weight=FLAGS.entropy_weight,
      entropy_anneal_steps=FLAGS.entropy_anneal_steps,
      log_every=FLAGS.log_every, eval_every=FLAGS.eval_every,
      checkpoint_every=FLAGS.checkpoint_every, keep_checkpoints=FLAGS.keep_checkpoints)
  return config.validate()


# Settings added after runs were made: left out of the workdir's digest at these
# values, so that earlier runs keep their default workdirs (and sweeps find them).
_DIGEST_OMITS_AT = {"label_seed": None, "kl_weight": 1.0, "augment_shift": 0,
                    "augment_shear": 0.0, "augment_elastic": 0.0, "consistency_weight": 0.0,
                    "view_elastic": 0.0, "teacher_decay": 0.0, "balance_weight": 0.0,
                    "vat_weight": 0.0, "vat_epsilon": 2.0, "generative_weight": 0.0,
                    "generative_view": "transfer", "generative_steps": 0, "binarise": True,
                    "classifier_input": "binary", "entropy_weight": 1.0, "entropy_anneal_steps": 0}
_MODEL_DIGEST_OMITS_AT = {"classifier_arch": None, "classifier_dropout": 0.0,
                          "matmul_dtype": "float32"}


def _omit_neutral(settings: dict, neutral: dict) -> dict:
  return {k: v for k, v in settings.items() if not (k in neutral and v == neutral[k])}


def child_environment(parallel: int, environ=None) -> dict:
  """The training subprocesses' environment: this one's, and with several runs at a time,
  XLA_PYTHON_CLIENT_PREALLOCATE=false unless set. JAX otherwise takes 75% of a GPU's
  memory per process, so several runs on one GPU could run out of it, while one run
  needs far less (the benchmark's IE-VAE step: about 110 MB of arguments,
  outputs and temporaries, results/throughput_gpu.json)."""
  environ = dict(os.environ if environ is None else environ)
  if parallel > 1:
    environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  return environ


def finished_results(workdir: str, num_steps: Optional[int] = None) -> Optional[dict]:
  """The results.json of a run in workdir that trained num_steps steps (None: as many
  as the run itself was set to), or None if there is none or it stopped short."""
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    results = json.load(f)
  target = results["flags"]["num_steps"] if num_steps is None else num_steps
  return results if results.get("steps", 0) >= target else None


def default_workdir(launcher: str, config: config_lib.TrainConfig) -> str:
  settings = _omit_neutral({k: v for k, v in config.to_dict().items()
                            if k not in checkpointing.RESUMABLE_SETTINGS}, _DIGEST_OMITS_AT)
  settings["model"] = _omit_neutral(settings["model"], _MODEL_DIGEST_OMITS_AT)
  digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
  labels = "all" if config.labels is None else config.labels
  return os.path.join("runs", f"{launcher}-{config.dataset}-labels{labels}-seed{config.seed}-"
                      f"{digest}")


def default_seeds_per_program(config: config_lib.TrainConfig, num_seeds: int) -> int:
  """All seeds in one program, except convolutions on a CPU: vmapped per-seed kernels
  become grouped convolutions there, slower than the seeds one after another."""
  has_conv = "conv" in (config.model.arch, config.model.classifier_arch)
  return 1 if has_conv and jax.default_backend() == "cpu" else num_seeds


def check_workdir_writable(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test.{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise config_lib.ConfigError(f"Cannot write to --workdir={workdir} ({e.strerror}); choose a "
                                 f"directory you can write to.") from None


def main_guard(body):
  """Runs a launcher's body: one-sentence errors (exit 1) for bad input, exit 128 +
  signal after an interruption, tracebacks only with --verbosity=1. Returns body()."""
  logging.getLogger("absl").setLevel(logging.WARNING)   # orbax logs every save at INFO
  logging.getLogger("ievae_jax").setLevel(logging.INFO)
  try:
    return body()
  except (config_lib.ConfigError, data.DataError, ievae_jax.NonFiniteLossError) as e:
    if FLAGS.verbosity >= 1:
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except ievae_jax.TrainingInterrupted as e:
    print(e, file=sys.stderr)
    sys.exit(128 + e.signum)


def run(launcher: str, supervised: bool) -> None:
  """Body of a launcher's main(): configure, validate, train, evaluate."""

  def body():
    initialize_distributed()
    config = config_from_flags(supervised)
    workdir = FLAGS.workdir or default_workdir(launcher, config)
    check_workdir_writable(workdir)
    arrays = data.load(config.dataset, config.data_dir, config.tfds_data_dir)
    logging.getLogger("ievae_jax").info("workdir: %s", workdir)
    return ievae_jax.train_and_evaluate(config, workdir, arrays)

  results = main_guard(body)
  print(json.dumps({k: results[k] for k in ("test_error", "validation_error", "labels", "seed",
                                            "steps", "wall_seconds")}))
