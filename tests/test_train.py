"""The training step and loop: PRNG per step, resume, non-finite losses."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ievae_jax import checkpointing, data, evaluation, objective, train_lib
from ievae_jax.config import ConfigError
from tests.conftest import tiny_train_config


@pytest.fixture(scope="module")
def small_arrays(small_mnist_dir):
  return data.load("mnist", small_mnist_dir)


def _batch(arrays, n=10):
  return ({"image": arrays["train_images"][:n], "label": arrays["train_labels"][:n].astype(np.int32)},
          {"image": arrays["train_images"][n:2 * n]})


def test_step_is_a_function_of_seed_and_step(small_arrays):
  config = tiny_train_config()
  step = train_lib.make_train_step(config, alpha=1.0)
  labelled, unlabelled = _batch(small_arrays)
  new = lambda: train_lib.create_train_state(jax.random.key(0), config)
  a, metrics_a = step(new(), labelled, unlabelled)
  b, metrics_b = step(new(), labelled, unlabelled)
  assert float(metrics_a["loss"]) == float(metrics_b["loss"])
  assert int(a.step) == 1 and int(a.nonfinite_step) == -1
  # The same state at another step number draws other noise.
  c, metrics_c = step(new().replace(step=jnp.array(5, jnp.int32)), labelled, unlabelled)
  assert float(metrics_c["loss"]) != float(metrics_a["loss"])


def test_teacher_is_the_moving_average_of_the_classifier(small_arrays):
  """After step n teacher = d * teacher + (1 - d) * params, d = min(0.9, 1 - 1 / (n + 1))
  (computed here in numpy, from the parameters the step returns); without
  teacher_decay the state has none."""
  assert train_lib.create_train_state(jax.random.key(0), tiny_train_config()).teacher_params is None
  decay = 0.9
  config = tiny_train_config(augment_shift=2, consistency_weight=5.0, teacher_decay=decay)
  step = train_lib.make_train_step(config, alpha=1.0)
  labelled, unlabelled = _batch(small_arrays)
  state = train_lib.create_train_state(jax.random.key(0), config)
  expected = jax.tree.map(lambda a: np.asarray(a, np.float64), state.params.nets["classifier"])
  for n in range(1, 31):
    state, _ = step(state, labelled, unlabelled)
    d = min(decay, 1 - 1 / (n + 1))           # 0.5, 0.667, ..., then 0.9 from step 9
    expected = jax.tree.map(lambda t, p: d * t + (1 - d) * np.asarray(p, np.float64), expected,
                            state.params.nets["classifier"])
  assert set(state.teacher_params.nets) == {"classifier"}
  for got, want, now in zip(jax.tree.leaves(state.teacher_params.nets["classifier"]),
                            jax.tree.leaves(expected),
                            jax.tree.leaves(state.params.nets["classifier"])):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-7)
  assert any(np.abs(np.asarray(g) - np.asarray(n)).max() > 1e-6
             for g, n in zip(jax.tree.leaves(state.teacher_params), jax.tree.leaves(
                 state.params.nets["classifier"])))   # it lags the model


def test_generative_term_applies_only_over_the_first_generative_steps(small_arrays):
  """Three steps with generative_steps=2 are two steps with the term all run, then one
  without it (both computed here by configs without a schedule): the same parameters.
  The term's KL is still logged once its weight is 0."""
  base = dict(augment_shift=2, generative_weight=4.0)
  scheduled = tiny_train_config(generative_steps=2, **base)
  always = tiny_train_config(**base)
  never = tiny_train_config(augment_shift=2)
  labelled, unlabelled = _batch(small_arrays)
  copy = lambda s: jax.tree.map(jnp.copy, s)   # the steps donate their input state
  first = train_lib.create_train_state(jax.random.key(0), scheduled)

  state, logged = copy(first), []
  step = train_lib.make_train_step(scheduled, alpha=1.0)
  for _ in range(3):
    state, metrics = step(state, labelled, unlabelled)
    logged.append(float(metrics["generative_consistency"]))
  step_always = train_lib.make_train_step(always, alpha=1.0)
  expected, _ = step_always(copy(first), labelled, unlabelled)
  expected, _ = step_always(expected, labelled, unlabelled)
  kept_on = copy(expected)
  expected, _ = train_lib.make_train_step(never, alpha=1.0)(expected, labelled, unlabelled)
  kept_on, _ = step_always(kept_on, labelled, unlabelled)

  assert min(logged) > 0
  for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected.params)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)
  # The third step differs from one with the term kept on, so the test can tell.
  assert any(np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-6
             for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(kept_on.params)))


def test_vmapped_seeds_keep_a_teacher_each(small_arrays):
  """Under vmap_seeds every seed's teacher is the one its own step would give."""
  config = tiny_train_config(augment_shift=2, consistency_weight=5.0, teacher_decay=0.9)
  labelled, unlabelled = _batch(small_arrays)
  seeds = (0, 3)
  states = [train_lib.create_train_state(jax.random.key(s), config) for s in seeds]
  stack = lambda *xs: jnp.stack(xs)
  step = train_lib.make_train_step(config, alpha=1.0, vmap_seeds=True)
  together, _ = step(jax.tree.map(stack, *states), jax.tree.map(stack, labelled, labelled),
                     jax.tree.map(stack, unlabelled, unlabelled),
                     jnp.stack([jax.random.key(s) for s in seeds]))
  for i, seed in enumerate(seeds):
    alone, _ = train_lib.make_train_step(dataclasses.replace(config, seed=seed), alpha=1.0)(
        train_lib.create_train_state(jax.random.key(seed), config), labelled, unlabelled)
    for a, b in zip(jax.tree.leaves(together.teacher_params), jax.tree.leaves(alone.teacher_params)):
      np.testing.assert_allclose(np.asarray(a)[i], np.asarray(b), rtol=1e-4, atol=1e-6)


def test_a_run_with_a_teacher_resumes_it_and_reports_its_errors(tmp_path, small_arrays):
  """The teacher is checkpointed: stop at 4 and resume to 6 gives the teacher of a
  straight run; results.json and metrics.jsonl carry the teacher's errors."""
  settings = dict(augment_shift=2, consistency_weight=5.0, teacher_decay=0.5)
  straight = tiny_train_config(num_steps=6, **settings)
  results = train_lib.train_and_evaluate(straight, str(tmp_path / "straight"), small_arrays)
  train_lib.train_and_evaluate(tiny_train_config(num_steps=4, **settings),
                               str(tmp_path / "resumed"), small_arrays)
  train_lib.train_and_evaluate(straight, str(tmp_path / "resumed"), small_arrays)
  like = train_lib.create_train_state(jax.random.key(0), straight)
  a, _ = checkpointing.restore_latest(checkpointing.manager(str(tmp_path / "straight")), like)
  b, _ = checkpointing.restore_latest(checkpointing.manager(str(tmp_path / "resumed")), like)
  for x, y in zip(jax.tree.leaves(a.teacher_params), jax.tree.leaves(b.teacher_params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  params = train_lib._local_params(a.teacher_params)
  splits = data.make_splits(small_arrays, 10, straight.labels, straight.validation_size,
                            straight.seed)
  assert results["teacher_test_error"] == evaluation.classification_error(
      params, splits.test_images, splits.test_labels)
  assert 0 <= results["teacher_validation_error"] <= 1
  lines = [json.loads(l) for l in open(tmp_path / "straight" / "metrics.jsonl")]
  checks = [l for l in lines if "validation_error" in l]
  assert checks and all(0 <= l["teacher_validation_error"] <= 1 for l in checks)


def _poisoned(state):
  """state with one NaN in the decoder's output bias: every loss from it is NaN."""
  nets = jax.tree.map(lambda a: a, state.params.nets)
  nets["decoder"]["Dense_1"]["bias"] = nets["decoder"]["Dense_1"]["bias"].at[0].set(jnp.nan)
  return state.replace(params=state.params.replace(nets=nets))


def test_nonfinite_step_keeps_params_and_records_the_step(small_arrays):
  config = tiny_train_config()
  step = train_lib.make_train_step(config, alpha=1.0)
  labelled, unlabelled = _batch(small_arrays)
  state = train_lib.create_train_state(jax.random.key(0), config)
  poisoned = _poisoned(state).replace(step=jnp.array(9, jnp.int32))
  before = jax.tree.map(np.asarray, poisoned.params)
  after, _ = step(poisoned, labelled, unlabelled)
  assert int(after.nonfinite_step) == 10 and int(after.step) == 10
  for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after.params)):
    np.testing.assert_array_equal(x, np.asarray(y))


def test_nonfinite_seed_keeps_its_state_while_the_other_seed_trains(small_arrays):
  # Under vmap_seeds the step's cond becomes a per-seed select.
  config = tiny_train_config()
  step = train_lib.make_train_step(config, alpha=1.0, vmap_seeds=True)
  labelled, unlabelled = _batch(small_arrays)
  stack = lambda *trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
  state = train_lib.create_train_state(jax.random.key(0), config)
  states = stack(state, _poisoned(state))
  before = jax.tree.leaves(jax.tree.map(np.asarray, (states.params, states.opt_state)))
  after, _ = step(states, stack(labelled, labelled), stack(unlabelled, unlabelled),
                  jax.random.split(jax.random.key(1), 2))
  np.testing.assert_array_equal(np.asarray(after.nonfinite_step), [-1, 1])
  np.testing.assert_array_equal(np.asarray(after.step), [1, 1])
  pairs = [(np.asarray(x), y) for x, y in
           zip(jax.tree.leaves((after.params, after.opt_state)), before)]
  assert any(not np.array_equal(x[0], y[0]) for x, y in pairs)
  for x, y in pairs:
    np.testing.assert_array_equal(x[1], y[1])


def test_resume_continues_to_the_same_parameters(tmp_path, small_arrays):
  straight = tiny_train_config(num_steps=6)
  train_lib.train_and_evaluate(straight, str(tmp_path / "straight"), small_arrays)
  # Stop at 4 (checkpointed), then resume to 6 with the same settings.
  train_lib.train_and_evaluate(tiny_train_config(num_steps=4), str(tmp_path / "resumed"),
                               small_arrays)
  results = train_lib.train_and_evaluate(straight, str(tmp_path / "resumed"), small_arrays)
  assert results["steps"] == 6
  for name in ("straight", "resumed"):
    assert sorted(os.listdir(tmp_path / name / "checkpoints"))[-1] == "6"
  like = train_lib.create_train_state(jax.random.key(0), straight)
  a, _ = checkpointing.restore_latest(checkpointing.manager(str(tmp_path / "straight")), like)
  b, _ = checkpointing.restore_latest(checkpointing.manager(str(tmp_path / "resumed")), like)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_nonfinite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, small_arrays, monkeypatch):
  workdir = str(tmp_path / "run")
  train_lib.train_and_evaluate(tiny_train_config(num_steps=4), workdir, small_arrays)
  like = train_lib.create_train_state(jax.random.key(0), tiny_train_config())
  good, _ = checkpointing.restore_latest(checkpointing.manager(workdir), like)

  real_loss = objective.loss
  def poisoned_loss(*args, **kwargs):
    total, metrics = real_loss(*args, **kwargs)
    return total * jnp.nan, metrics
  monkeypatch.setattr(objective, "loss", poisoned_loss)
  with pytest.raises(train_lib.NonFiniteLossError, match="non-finite at step 5.*step 4"):
    train_lib.train_and_evaluate(tiny_train_config(num_steps=8), workdir, small_arrays)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-1] == "4"
  kept, _ = checkpointing.restore_latest(checkpointing.manager(workdir), like)
  for x, y in zip(jax.tree.leaves(good), jax.tree.leaves(kept)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_results_and_metrics_files(tmp_path, small_arrays):
  results = train_lib.train_and_evaluate(tiny_train_config(), str(tmp_path), small_arrays)
  saved = json.load(open(tmp_path / "results.json"))
  for key in ("test_error", "labels", "seed", "steps", "dataset", "wall_seconds", "flags"):
    assert key in saved
  assert saved == json.loads(json.dumps(results))
  assert 0.0 <= saved["test_error"] <= 1.0 and saved["labels"] == 20 and saved["steps"] == 4
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [l["step"] for l in lines] == [2, 4]
  assert all(np.isfinite(l["loss"]) and "validation_error" in l for l in lines)


def test_batch_size_must_divide_by_device_count(tmp_path, small_arrays, monkeypatch):
  monkeypatch.setattr(jax, "devices", lambda: [object()] * 3)
  with pytest.raises(ConfigError, match="--batch_size=10 does not divide by the 3 devices"):
    train_lib.train_and_evaluate(tiny_train_config(), str(tmp_path), small_arrays)


def test_default_alpha_convention():
  assert train_lib.default_alpha(55000, 100) == pytest.approx(55.0)
  assert train_lib.default_alpha(55000, 55000) == pytest.approx(0.1)


def test_entropy_weight_decays_linearly_to_one():
  annealed = tiny_train_config(entropy_weight=10.0, entropy_anneal_steps=100)
  got = [float(train_lib.entropy_weight(annealed, jnp.asarray(s))) for s in (0, 50, 100, 400)]
  np.testing.assert_allclose(got, [10.0, 5.5, 1.0, 1.0], rtol=1e-6)
  held = tiny_train_config(entropy_weight=3.0)
  assert float(train_lib.entropy_weight(held, jnp.asarray(1000))) == 3.0
  assert float(train_lib.entropy_weight(tiny_train_config(), jnp.asarray(0))) == 1.0
