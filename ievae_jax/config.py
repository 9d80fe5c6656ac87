"""Configuration of the model and of a training run.

Both are frozen dataclasses so that a `ModelConfig` can be static metadata of the
parameter pytree (see `model.Params`) and hashed by `jax.jit`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

# "ievae": the method. "m2": Kingma et al. 2014's M2, q(z | x, y) and p(x | y, z) on a
# one-hot y. "vae": one latent, no class (classification only through a probe).
MODELS = ("ievae", "m2", "vae")
ARCHS = ("mlp", "conv")
# "conditional": q(z | x, r_y), the spec's default. "strict": q(z | x), the ablation.
ROUTINGS = ("conditional", "strict")
LIKELIHOODS = ("bernoulli",)
DATASETS = ("mnist", "fashion_mnist")
LR_SCHEDULES = ("constant", "cosine")
CLASSIFIER_INPUTS = ("binary", "grey")
# Where the generative consistency's second view takes its z (objective.generative_view).
GENERATIVE_VIEWS = ("reconstruction", "transfer")
# The dense layers' product inputs; "bfloat16" accumulates in float32 (nets/products.py).
MATMUL_DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
  """A setting that cannot work; the message names the value and the fix."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of the IE-VAE.

  Attributes:
    image_shape: (H, W, C) of one data point.
    kind: "ievae" (default), or a baseline in the same code paths: "m2" (r_y is
      the one-hot y itself, so r_dim is K and `r_dim` is unused; the encoder sees
      y as under the conditional routing) or "vae" (q(z | x) and p(x | z): no
      class, no classifier, `routing` and `r_dim` unused).
    num_classes: K, the number of classes (values of y).
    arch: "mlp" (784-500-500 networks as in Kingma et al. 2014) or "conv".
    classifier_arch: the classifier's own architecture ("mlp" or "conv"); None: `arch`.
      A conv classifier with MLP encoder and decoder keeps the step cheap (the
      classifier sees each image once, the decoder K + 1 times).
    z_dim: d_z, size of the equivariant latent z.
    r_dim: d_r, size of the invariant representation r_y = g(y).
    hidden: width of the hidden layers (MLP) or of the dense layers (conv).
    routing: "conditional" for q(z | x, r_y) or "strict" for q(z | x).
    likelihood: pixel likelihood p(x | r_y, z); only "bernoulli" for now.
    classifier_dropout: dropout rate on the classifier's hidden features during
      training (0: none, the default). A property of the network q(y | x), not of
      the objective; evaluation and the public API never drop.
    matmul_dtype: "float32" (default) or "bfloat16": the dtype of the dense layers'
      matrix-product inputs, forward and backward, accumulated in float32; weights,
      activations, loss and optimiser stay float32, convolutions too. See
      `nets.products`; "bfloat16" supports jit, vmap and grad but not forward-mode
      autodiff (jax.jvp) through the dense layers.
  """
  image_shape: Tuple[int, int, int] = (28, 28, 1)
  num_classes: int = 10
  kind: str = "ievae"
  arch: str = "mlp"
  classifier_arch: Optional[str] = None
  z_dim: int = 8
  r_dim: int = 16
  hidden: int = 500
  routing: str = "conditional"
  likelihood: str = "bernoulli"
  classifier_dropout: float = 0.0
  matmul_dtype: str = "float32"

  @property
  def has_classes(self) -> bool:
    """Whether the model has y: a classifier q(y | x) and a class-conditional decoder."""
    return self.kind != "vae"

  @property
  def encoder_sees_class(self) -> bool:
    """Whether the equivariant encoder takes r_y: q(z | x, r_y) rather than q(z | x)."""
    return self.has_classes and (self.kind == "m2" or self.routing == "conditional")

  def validate(self) -> "ModelConfig":
    if self.kind not in MODELS:
      raise ConfigError(f"Unknown model {self.kind!r}; use one of {', '.join(MODELS)}.")
    if self.arch not in ARCHS:
      raise ConfigError(f"Unknown architecture {self.arch!r}; use one of {', '.join(ARCHS)}.")
    if self.classifier_arch is not None and self.classifier_arch not in ARCHS:
      raise ConfigError(f"Unknown classifier architecture {self.classifier_arch!r}; use one of "
                        f"{', '.join(ARCHS)}.")
    if self.routing not in ROUTINGS:
      raise ConfigError(f"Unknown routing {self.routing!r}; use one of {', '.join(ROUTINGS)}.")
    if self.likelihood not in LIKELIHOODS:
      raise ConfigError(
          f"Unknown likelihood {self.likelihood!r}; use one of {', '.join(LIKELIHOODS)}.")
    for name in ("num_classes", "z_dim", "r_dim", "hidden"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    if not (isinstance(self.classifier_dropout, (int, float))
            and 0 <= self.classifier_dropout < 1):
      raise ConfigError(f"--classifier_dropout must be a rate in [0, 1), got "
                        f"{self.classifier_dropout!r}; 0 turns it off.")
    if self.matmul_dtype not in MATMUL_DTYPES:
      raise ConfigError(f"Unknown --matmul_dtype {self.matmul_dtype!r}; use one of "
                        f"{', '.join(MATMUL_DTYPES)}.")
    if "conv" in (self.arch, self.classifier_arch) and tuple(self.image_shape[:2]) != (28, 28):
      raise ConfigError(
          f"The conv architecture expects 28x28 images, got {self.image_shape}; use --arch=mlp.")
    return self


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """One training run. Semi-supervised when `labels` < the training-set size.

  Attributes:
    model: the architecture.
    dataset: "mnist" or "fashion_mnist".
    data_dir: a directory of IDX .gz files; None reads the dataset through TFDS.
    tfds_data_dir: TFDS's own data directory (None: TFDS's default).
    labels: number of labelled training examples, a multiple of K (labels / K per
      class); None labels the whole training split (supervised training).
    validation_size: examples carved from the training split for model selection.
    seed: seeds parameters, the labelled subset (unless label_seed is set) and every
      random draw of training.
    label_seed: seeds the choice of the labelled subset alone; None (default): seed.
      Restarts of one labelled set (other initialisations and draws, the same 100
      labels) keep label_seed and vary seed.
    num_steps: optimiser steps.
    batch_size: unlabelled examples per step (the U term).
    labelled_batch_size: labelled examples per step (the L and alpha terms).
    learning_rate: Adam's peak learning rate.
    lr_schedule: "constant" or "cosine" (decay to 0 over num_steps).
    alpha: weight of the mean labelled cross-entropy. None: 0.1 * N / N_l, the
      practical reading of Kingma et al. 2014's alpha = 0.1 N when each term is a
      batch mean (N training examples, N_l labelled ones). See objective.py.
    kl_weight: weight of KL(q(z | .) || p(z)) in the bound (1: the paper's ELBO; above
      1 class information costs more in z than in r_y). IE-VAE and M2 only; the VAE
      baseline keeps its plain ELBO. See objective.loss.
    augment_shift: extension beyond the paper, 0 (default) to turn off: every
      training image (labelled and unlabelled) is translated by a random integer
      offset of at most this many pixels per axis each step (augmentation.py).
    augment_shear: extension beyond the paper, 0 (default) to turn off: every
      training image is sheared horizontally (slanted) by an amount drawn uniformly
      from [-augment_shear, augment_shear] each step, before binarisation (row i
      moves by amount * (middle row - i) pixels; augmentation.shear).
    augment_elastic: extension beyond the paper, 0 (default) to turn off: every
      training image gets a random elastic distortion of this scale alpha each step
      (Simard et al. 2003: a uniform(-1, 1) displacement per pixel and axis, smoothed
      by a Gaussian of width augmentation.ELASTIC_SIGMA = 4 pixels, times alpha;
      their MNIST setting is alpha = 34, about 1.4 pixels of displacement), after the
      shear and before binarisation (augmentation.random_elastic).
    consistency_weight: extension beyond the paper, 0 (default) to turn off; needs
      augment_shift, augment_shear, augment_elastic or view_elastic > 0. Adds
      consistency_weight * mean KL(q(y | x) || q(y | x')) over the unlabelled batch,
      x' a second random view of the same image (its own shift, shear, distortion and
      binarisation) and q(y | x) held fixed as the target (objective.loss).
    view_elastic: extension beyond the paper, 0 (default) to turn off; needs
      consistency_weight > 0. The consistency view x' alone is elastically distorted at
      this scale alpha, in place of augment_elastic (`augmentation.random_elastic`),
      while the target, the labelled images and the likelihood's x keep their own
      augmentation: a strong view read against a weak one, as FixMatch (Sohn et al.
      2020) does with its strong augmentation.
    teacher_decay: extension beyond the paper, 0 (default) to turn off; needs
      consistency_weight > 0. The consistency target q(y | x) is read by a mean
      teacher (Tarvainen & Valpola 2017): an exponential moving average of the
      parameters, teacher <- teacher_decay * teacher + (1 - teacher_decay) * params
      after every step, started at the initial parameters (TrainState.teacher_params);
      after n steps the decay is min(teacher_decay, 1 - 1 / (n + 1)), as in their code,
      so the early teacher is the plain mean of the parameters so far.
      0: the target is the model itself, as without this option. Evaluation and the
      public API use the trained parameters; the teacher's validation and test errors
      are reported beside them (train_lib).
    balance_weight: extension beyond the paper, 0 (default) to turn off. Adds
      balance_weight * KL(mean q(y | x) || p(y)) over each unlabelled batch: a pull of
      the batch's average prediction toward the class prior (objective.class_balance).
    vat_weight, vat_epsilon: extension beyond the paper, vat_weight 0 (default) to
      turn off. Virtual adversarial training (Miyato et al. 2018) on the unlabelled
      batch: adds vat_weight * mean KL(q(y | x) || q(y | x + r_adv)), r_adv the
      perturbation of L2 norm vat_epsilon (over each image's pixels, in [0, 1] units)
      that one power iteration finds most changes q(y | x) (objective.virtual_adversarial).
    generative_weight, generative_view: extension beyond the paper, generative_weight
      0 (default) to turn off. Adds generative_weight * mean KL(q(y | x) || q(y | x'))
      over the unlabelled batch, q(y | x) held fixed as the target and x' drawn by the
      model: p(x | y_hat, z), y_hat the argmax of q(y | x) and z the mean of
      q(z | x, r_y_hat) of x itself ("reconstruction") or of the image before it in the
      batch ("transfer", the default: x's predicted class in another image's style).
      No gradient reaches the encoder or decoder through x' (objective.generative_view).
    generative_steps: the generative term applies over the first generative_steps
      steps and is off after them (0, the default: the whole run). Runs with the term
      were ahead early and level or behind by the end (ACCURACY_LOG, thirty-third and
      thirty-fourth passes); this keeps the early part only. Once off, the weight is
      0 but the view is still drawn and its KL logged (step.generative_weight says why).
    entropy_weight, entropy_anneal_steps: weight of H(q(y | x)) in U at step 0,
      decaying linearly to 1 (the paper's bound) over entropy_anneal_steps steps (0:
      held for the whole run). Above 1 it softens early self-labelling: q(y | x)'s
      optimum becomes softmax(L(x, .) / weight). Default 1: the paper's bound.
    binarise: True (default): dynamic binarisation, each step every pixel is drawn
      from Bernoulli(intensity), so x is binary as the Bernoulli likelihood assumes.
      False: the grey intensities in [0, 1] themselves are the Bernoulli targets
      (the cross-entropy reading common in VAE code) and the classifier sees them.
    classifier_input: what q(y | x) reads in training. "binary" (default): the
      binarised x the likelihood scores; "grey": the grey levels that x was drawn
      from (after the same shift and shear). Evaluation always classifies grey
      levels, so "grey" trains the classifier on the input it is tested on. Either
      way L and U stay lower bounds on log p(x): q may condition on anything.
    log_every, eval_every, checkpoint_every: rhythm, in steps, of progress logs,
      validation error and checkpoints.
    keep_checkpoints: how many of the latest checkpoints to keep.
  """
  model: ModelConfig = ModelConfig()
  dataset: str = "mnist"
  data_dir: Optional[str] = None
  tfds_data_dir: Optional[str] = None
  labels: Optional[int] = 100
  validation_size: int = 5000
  seed: int = 0
  label_seed: Optional[int] = None
  num_steps: int = 20000
  batch_size: int = 100
  labelled_batch_size: int = 100
  learning_rate: float = 1e-3
  lr_schedule: str = "constant"
  alpha: Optional[float] = None
  kl_weight: float = 1.0
  augment_shift: int = 0
  augment_shear: float = 0.0
  augment_elastic: float = 0.0
  consistency_weight: float = 0.0
  view_elastic: float = 0.0
  teacher_decay: float = 0.0
  balance_weight: float = 0.0
  vat_weight: float = 0.0
  vat_epsilon: float = 2.0
  generative_weight: float = 0.0
  generative_view: str = "transfer"
  generative_steps: int = 0
  binarise: bool = True
  classifier_input: str = "binary"
  entropy_weight: float = 1.0
  entropy_anneal_steps: int = 0
  log_every: int = 500
  eval_every: int = 2000
  checkpoint_every: int = 2000
  keep_checkpoints: int = 3

  def validate(self) -> "TrainConfig":
    self.model.validate()
    if self.dataset not in DATASETS:
      raise ConfigError(f"Unknown dataset {self.dataset!r}; use one of {', '.join(DATASETS)}.")
    if self.lr_schedule not in LR_SCHEDULES:
      raise ConfigError(
          f"Unknown lr_schedule {self.lr_schedule!r}; use one of {', '.join(LR_SCHEDULES)}.")
    for name in ("num_steps", "batch_size", "labelled_batch_size", "log_every", "eval_every",
                 "checkpoint_every", "keep_checkpoints"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ConfigError(f"--{name} must be a positive integer, got {value!r}.")
    if self.validation_size < 0:
      raise ConfigError(f"--validation_size must be >= 0, got {self.validation_size}.")
    if not self.learning_rate > 0:
      raise ConfigError(f"--learning_rate must be positive, got {self.learning_rate}.")
    if self.alpha is not None and not self.alpha >= 0:
      raise ConfigError(f"--alpha must be >= 0, got {self.alpha}.")
    if not self.kl_weight > 0:
      raise ConfigError(f"--kl_weight must be positive, got {self.kl_weight}.")
    if not self.entropy_weight > 0:
      raise ConfigError(f"--entropy_weight must be positive, got {self.entropy_weight}.")
    if not isinstance(self.entropy_anneal_steps, int) or self.entropy_anneal_steps < 0:
      raise ConfigError(f"--entropy_anneal_steps must be an integer >= 0, got "
                        f"{self.entropy_anneal_steps!r}.")
    if not isinstance(self.augment_shift, int) or not 0 <= self.augment_shift < min(
        self.model.image_shape[:2]):
      raise ConfigError(f"--augment_shift must be an integer in [0, image size), got "
                        f"{self.augment_shift!r}; 2 is a common choice for MNIST, 0 turns it off.")
    if not self.consistency_weight >= 0:
      raise ConfigError(f"--consistency_weight must be >= 0, got {self.consistency_weight}.")
    if not self.balance_weight >= 0:
      raise ConfigError(f"--balance_weight must be >= 0, got {self.balance_weight}; 0 turns "
                        "it off.")
    if not self.vat_weight >= 0:
      raise ConfigError(f"--vat_weight must be >= 0, got {self.vat_weight}; 0 turns it off.")
    if not self.vat_epsilon > 0:
      raise ConfigError(f"--vat_epsilon must be positive, got {self.vat_epsilon}; it is the "
                        "L2 norm of the adversarial perturbation of an image (e.g. 2).")
    if not 0 <= self.augment_shear <= 1:
      raise ConfigError(f"--augment_shear must be in [0, 1], got {self.augment_shear!r}; 0.5 "
                        "covers most MNIST slants, 0 turns it off.")
    if not 0 <= self.augment_elastic <= 100:
      raise ConfigError(f"--augment_elastic must be in [0, 100], got {self.augment_elastic!r}; "
                        "34 is Simard et al.'s MNIST setting, 0 turns it off.")
    if self.consistency_weight > 0 and not (self.augment_shift or self.augment_shear
                                            or self.augment_elastic or self.view_elastic):
      raise ConfigError("--consistency_weight compares q(y|x) across random views of x; set "
                        "--augment_shift, --augment_shear, --augment_elastic or --view_elastic "
                        "too (e.g. --augment_shift=2).")
    if not 0 <= self.view_elastic <= 100:
      raise ConfigError(f"--view_elastic must be in [0, 100], got {self.view_elastic!r}; "
                        "34 is Simard et al.'s MNIST setting, 0 turns it off.")
    if self.view_elastic > 0 and self.consistency_weight == 0:
      raise ConfigError("--view_elastic distorts the view that --consistency_weight reads; "
                        "set --consistency_weight too (e.g. --consistency_weight=50).")
    if not 0 <= self.teacher_decay < 1:
      raise ConfigError(f"--teacher_decay must be in [0, 1), got {self.teacher_decay!r}; "
                        "0.999 averages over about the last 1,000 steps, 0 turns it off.")
    if self.teacher_decay > 0 and self.consistency_weight == 0:
      raise ConfigError("--teacher_decay sets who reads the consistency target; set "
                        "--consistency_weight too (e.g. --consistency_weight=50).")
    if not self.generative_weight >= 0:
      raise ConfigError(f"--generative_weight must be >= 0, got {self.generative_weight}; "
                        "0 turns it off.")
    if self.generative_view not in GENERATIVE_VIEWS:
      raise ConfigError(f"Unknown generative_view {self.generative_view!r}; use one of "
                        f"{', '.join(GENERATIVE_VIEWS)}.")
    if self.generative_weight > 0 and not self.model.has_classes:
      raise ConfigError("--generative_weight compares q(y|x) with q(y|x') for a view drawn "
                        "in x's predicted class; the plain VAE (--model=vae) has no classes. "
                        "Use --model=ievae or --model=m2, or --generative_weight=0.")
    if not isinstance(self.generative_steps, int) or self.generative_steps < 0:
      raise ConfigError(f"--generative_steps must be an integer >= 0, got "
                        f"{self.generative_steps!r}; 0 keeps the generative term all run.")
    if self.generative_steps > 0 and self.generative_weight == 0:
      raise ConfigError("--generative_steps sets how long the generative term applies; set "
                        "--generative_weight too (e.g. --generative_weight=50).")
    if self.classifier_input not in CLASSIFIER_INPUTS:
      raise ConfigError(f"Unknown classifier_input {self.classifier_input!r}; use one of "
                        f"{', '.join(CLASSIFIER_INPUTS)}.")
    k = self.model.num_classes
    if self.labels is not None:
      if self.labels < k or self.labels % k:
        raise ConfigError(
            f"--labels={self.labels} is not a positive multiple of the {k} classes; "
            f"use e.g. --labels={max(k, self.labels - self.labels % k)}.")
    return self

  @property
  def labelled_subset_seed(self) -> int:
    return self.seed if self.label_seed is None else self.label_seed

  @property
  def supervised(self) -> bool:
    return self.labels is None

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "TrainConfig":
    d = dict(d)
    model = dict(d.pop("model"))
    model["image_shape"] = tuple(model["image_shape"])
    return cls(model=ModelConfig(**model), **d)
