"""The training step: a TrainState pytree and its jit-compiled update.

PRNG: the key for step t is fold_in(key(seed), t), split into the keys of the
labelled and unlabelled binarisation noise and of the latent noise (augmentation
and the consistency view draw from streams of their own); the data order derives
from (seed, t) too (see data.py). A run resumed from a checkpoint therefore draws
exactly the numbers of an uninterrupted one.

Non-finite losses: a step whose loss or gradients are not finite leaves the
parameters and optimiser state as they were and records its step number in the
state (`TrainState.nonfinite_step`); the loop in train_lib.py acts on it.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax

from ievae_jax import augmentation, model, objective
from ievae_jax.config import TrainConfig


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray            # int32 scalar: steps taken
  params: model.Params
  opt_state: Any
  nonfinite_step: jnp.ndarray  # int32: first step (from 1, as logged) with a non-finite loss, or -1
  # The mean teacher's classifier (TrainConfig.teacher_decay > 0), else None.
  teacher_params: Optional[model.Params] = None


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
  if config.lr_schedule == "cosine":
    learning_rate = optax.schedules.cosine_decay_schedule(config.learning_rate, config.num_steps)
  else:
    learning_rate = config.learning_rate
  return optax.adam(learning_rate)


@functools.partial(jax.jit, static_argnums=1)
def create_train_state(key: jax.Array, config: TrainConfig) -> TrainState:
  """Fresh state for `config`, initialised from `key` (jitted: one compile, not one per op)."""
  params = model.init(key, config.model)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=make_optimizer(config).init(params),
                    nonfinite_step=jnp.full((), -1, jnp.int32),
                    teacher_params=model.classifier_only(params) if config.teacher_decay else None)


def teacher_decay(config: TrainConfig, steps: jnp.ndarray) -> jnp.ndarray:
  """The mean teacher's decay after `steps` steps: min(teacher_decay, 1 - 1 / (steps + 1)),
  as in Tarvainen & Valpola's code, so that early on the teacher is the plain mean of
  the parameters so far rather than mostly the random initial ones."""
  return jnp.minimum(config.teacher_decay, 1.0 - 1.0 / (steps + 1.0))


def update_teacher(teacher: model.Params, params: model.Params, decay: jnp.ndarray) -> model.Params:
  """teacher <- decay * teacher + (1 - decay) * params, over the classifier's weights."""
  return jax.tree.map(lambda t, p: decay * t + (1.0 - decay) * p, teacher,
                      model.classifier_only(params))


def default_alpha(num_train: int, num_labelled: int) -> float:
  """Kingma et al.'s alpha = 0.1 N, on batch means: 0.1 * N / N_l (see objective.py)."""
  return 0.1 * num_train / num_labelled


def _sheared_grey(images: jnp.ndarray, shear_key: Optional[jax.Array],
                  max_shear: float) -> jnp.ndarray:
  """uint8 (B, H, W, C) -> float32 grey levels in [0, 1], randomly sheared if max_shear > 0."""
  return augmentation.random_shear(shear_key, images.astype(jnp.float32) / 255.0, max_shear)


def _draw_pixels(key: jax.Array, grey: jnp.ndarray, binarise: bool) -> jnp.ndarray:
  """Dynamic binarisation, pixel ~ Bernoulli(grey level); the grey levels if not binarise."""
  return jax.random.bernoulli(key, grey).astype(jnp.float32) if binarise else grey


def pixel_targets(key: jax.Array, images: jnp.ndarray, binarise: bool = True,
                  shear_key: Optional[jax.Array] = None, max_shear: float = 0.0) -> jnp.ndarray:
  """The training step's x: uint8 (B, H, W, C) -> float32 in [0, 1].

  binarise: dynamic binarisation, pixel ~ Bernoulli(intensity), drawn anew each
  step; otherwise the grey intensities (TrainConfig.binarise).
  max_shear > 0 (an extension, TrainConfig.augment_shear): the grey image is first
  sheared by an amount drawn from shear_key (`augmentation.random_shear`), so that
  binarisation sees the interpolated intensities.
  """
  return _draw_pixels(key, _sheared_grey(images, shear_key, max_shear), binarise)


def generative_weight(config: TrainConfig, step: jnp.ndarray):
  """Weight of the generative consistency at `step`: config.generative_weight over the
  first config.generative_steps steps, then 0 (a Python number, as given, if
  generative_steps is 0: all run).

  A traced weight, not a lax.cond that skips the term after generative_steps: on the
  CPU the step under such a cond, with both branches holding the whole loss and its
  gradient, took about 6 times as long, 2.4-2.9 s against 0.35-0.70 s (ACCURACY_LOG,
  thirty-fifth pass). So the view is still drawn, and `generative_consistency` still
  logged, once the weight is 0.
  """
  if config.generative_steps == 0:
    return config.generative_weight
  return jnp.where(step < config.generative_steps, config.generative_weight, 0.0)


def entropy_weight(config: TrainConfig, step: jnp.ndarray) -> jnp.ndarray:
  """Weight of H(q(y|x)) in U at `step`: config.entropy_weight, decaying linearly to 1
  (the paper's bound) over the first config.entropy_anneal_steps steps (0: constant)."""
  if config.entropy_anneal_steps == 0:
    return jnp.asarray(config.entropy_weight, jnp.float32)
  remaining = jnp.clip(1.0 - step / config.entropy_anneal_steps, 0.0, 1.0)
  return 1.0 + (config.entropy_weight - 1.0) * remaining


def training_view(config: TrainConfig, images: jnp.ndarray, key: jax.Array,
                  shift_key: jax.Array, shear_key: jax.Array,
                  elastic: Optional[float] = None) -> Dict[str, jnp.ndarray]:
  """One random view of uint8 images (B, H, W, C), as a step trains on it.

  elastic: the distortion's scale alpha in place of config.augment_elastic (None:
  that one); the consistency view's `view_elastic`.

  Returns {"image": x}, the likelihood's target, float32 (B, H, W, C): the grey
  levels, sheared (augment_shear), elastically distorted (augment_elastic),
  binarised (unless binarise is False), shifted (augment_shift); and, when
  classifier_input is "grey", "classifier_image": the grey levels x was drawn from,
  under the same shear, distortion and shift.
  """
  grey = _sheared_grey(images, shear_key, config.augment_shear)
  elastic = config.augment_elastic if elastic is None else elastic
  if elastic:
    # A stream folded from shear_key's, so that runs without it draw what they always drew.
    grey = augmentation.random_elastic(jax.random.fold_in(shear_key, 1), grey, elastic)
  x = _draw_pixels(key, grey, config.binarise)
  view = {"image": augmentation.random_shift(shift_key, x, config.augment_shift)}
  if config.classifier_input == "grey":
    view["classifier_image"] = augmentation.random_shift(shift_key, grey, config.augment_shift)
  return view


def make_train_step(config: TrainConfig, alpha: float, vmap_seeds: bool = False):
  """train_step(state, labelled, unlabelled) -> (state, metrics), jit-compiled, donating state.

  labelled: {"image": uint8 (B_l, H, W, C), "label": int (B_l,)};
  unlabelled: {"image": uint8 (B_u, H, W, C)} or None.
  With `vmap_seeds`, several seeds train in one program:
  train_step(states, labelled, unlabelled, seed_keys) with a leading seed axis S on
  the states, the batches (S, B, ...) and the keys (S,), each seed exactly its own run.
  """
  optimizer = make_optimizer(config)

  def train_step(state: TrainState, labelled: Dict, unlabelled: Optional[Dict],
                 seed_key: jax.Array):
    step_key = jax.random.fold_in(seed_key, state.step)
    key_l, key_u, key_z = jax.random.split(step_key, 3)
    # Separate streams, so that runs without augmentation draw what they always drew.
    key_shift_l, key_shift_u = jax.random.split(jax.random.fold_in(step_key, 1))
    key_shear_l, key_shear_u, key_shear_view = jax.random.split(jax.random.fold_in(step_key, 3), 3)

    labelled = dict(training_view(config, labelled["image"], key_l, key_shift_l, key_shear_l),
                    label=labelled["label"])
    if unlabelled is not None:
      images = unlabelled["image"]
      unlabelled = training_view(config, images, key_u, key_shift_u, key_shear_u)
      if config.consistency_weight:
        # A second view: its own binarisation, shift and shear (and, with view_elastic,
        # its own elastic distortion), from streams of its own.
        key_view, key_shift_view = jax.random.split(jax.random.fold_in(step_key, 2))
        view = training_view(config, images, key_view, key_shift_view, key_shear_view,
                             config.view_elastic or None)
        unlabelled["view"] = view.get("classifier_image", view["image"])
    grad_fn = jax.value_and_grad(objective.loss, has_aux=True)
    (loss, metrics), grads = grad_fn(state.params, labelled, unlabelled, key_z, alpha,
                                     config.kl_weight, entropy_weight(config, state.step),
                                     config.consistency_weight, config.balance_weight,
                                     config.vat_weight, config.vat_epsilon,
                                     generative_weight(config, state.step),
                                     config.generative_view, state.teacher_params)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def update(params, opt_state, teacher):
      updates, opt_state = optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      if teacher is not None:
        teacher = update_teacher(teacher, params, teacher_decay(config, state.step + 1))
      return params, opt_state, teacher

    # A non-finite step leaves params and optimiser state as they were. A cond, not
    # a jnp.where over the updated state: the where kept the old and the new state
    # alive together, so XLA copied the whole optimiser state every step (README,
    # "Speed"). Under vmap_seeds the cond becomes that select again, per seed.
    params, opt_state, teacher = jax.lax.cond(finite, update, lambda *old: old, state.params,
                                              state.opt_state, state.teacher_params)
    metrics["grad_norm"] = grad_norm
    metrics["param_norm"] = optax.tree.norm(params)
    new_state = TrainState(
        step=state.step + 1,
        params=params,
        opt_state=opt_state,
        nonfinite_step=jnp.where(finite | (state.nonfinite_step >= 0), state.nonfinite_step,
                                 state.step + 1),
        teacher_params=teacher)
    return new_state, metrics

  if vmap_seeds:
    return jax.jit(jax.vmap(train_step), donate_argnums=0)
  seed_key = jax.random.key(config.seed)
  return jax.jit(lambda state, labelled, unlabelled: train_step(state, labelled, unlabelled,
                                                                seed_key), donate_argnums=0)
