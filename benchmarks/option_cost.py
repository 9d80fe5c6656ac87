r"""What each training option costs per step, beside the launcher's defaults, in one run.

  python -m benchmarks.option_cost --cost_output=benchmarks/results/option_cost_cpu.json

The step is `experiments.mnist_semisup`'s at its defaults (IE-VAE, MLP encoder and
decoder, conv classifier, alpha 550, 100 labelled + 100 unlabelled random images of
`benchmarks/throughput._batches`), and the same step with each option of --variants
switched on. Every step is compiled first, then all are timed in alternating windows
(--windows of --steps_per_window steps), so that load on a shared machine hits them
alike. Printed and written: the median ms per step, examples/s and `relative_cost`
(ms per step over the defaults' ms per step, from the same run).
"""

import dataclasses
import json
import statistics

from absl import app, flags
import jax
import jax.numpy as jnp

from benchmarks import machine
from benchmarks import throughput
from experiments import common
from ievae_jax import config as config_lib, train_lib

FLAGS = flags.FLAGS
flags.DEFINE_list("variants", ["grey", "shift2", "shear05", "shift2_shear05_consistency550",
                               "shift2_shear05_consistency550_grey"],
                  "Settings to time beside the defaults (names of VARIANTS).")
flags.DEFINE_string("cost_output", None, "JSON path (optional).")

# The extensions at their reported setting (README): shifts 2, slant 0.25, consistency 50.
EXTENSIONS_50 = {"augment_shift": 2, "augment_shear": 0.25, "consistency_weight": 50.0}

# name -> TrainConfig or ModelConfig fields that differ from the launcher's defaults.
VARIANTS = {
    "defaults": {},
    "grey": {"classifier_input": "grey"},
    "shift2": {"augment_shift": 2},
    "shear05": {"augment_shear": 0.5},
    "shift2_shear05_consistency550": {"augment_shift": 2, "augment_shear": 0.5,
                                      "consistency_weight": 550.0},
    "shift2_shear05_consistency550_grey": {"augment_shift": 2, "augment_shear": 0.5,
                                           "consistency_weight": 550.0,
                                           "classifier_input": "grey"},
    "arch_conv": {"arch": "conv"},
    # The spec's ablation and the M2 baseline as `--routing=strict` and `--model=m2`
    # train them (M2 with the launcher's d_z = 50 for it).
    "routing_strict": {"routing": "strict"},
    "m2": {"kind": "m2", "z_dim": 50},
    # Dense layers' products with bfloat16 inputs (`--matmul_dtype=bfloat16`).
    "bfloat16": {"matmul_dtype": "bfloat16"},
    # The class-balance term (`--balance_weight`), at the weight ACCURACY_LOG tried.
    "balance10": {"balance_weight": 10.0},
    # Virtual adversarial training (`--vat_weight`), alone and on top of the extensions.
    "vat550": {"vat_weight": 550.0},
    "shift2_shear025_consistency550_vat550": {"augment_shift": 2, "augment_shear": 0.25,
                                              "consistency_weight": 550.0, "vat_weight": 550.0},
    # The extensions as reported (consistency weight 50), with a mean teacher reading
    # the consistency target (`--teacher_decay`), and with the generative consistency
    # (`--generative_weight`, transfer view) on top: all run, and scheduled
    # (`--generative_steps`), timed while still on (a step far off) and once off;
    # and with elastic distortion (`--augment_elastic`, Simard et al.'s alpha = 34).
    "shift2_shear025_consistency50": EXTENSIONS_50,
    "shift2_shear025_consistency50_teacher0999": {**EXTENSIONS_50, "teacher_decay": 0.999},
    "shift2_shear025_consistency50_generative50": {**EXTENSIONS_50, "generative_weight": 50.0},
    "shift2_shear025_consistency50_generative50_until1m": {
        **EXTENSIONS_50, "generative_weight": 50.0, "generative_steps": 1_000_000},
    "shift2_shear025_consistency50_generative50_until1": {
        **EXTENSIONS_50, "generative_weight": 50.0, "generative_steps": 1},
    "shift2_shear025_consistency50_elastic34": {**EXTENSIONS_50, "augment_elastic": 34.0},
    # The extensions with an MLP classifier instead of the conv one: what the conv
    # classifier costs, to size a wider one (ACCURACY_LOG, "Not tried yet").
    "shift2_shear025_consistency50_classifier_mlp": {**EXTENSIONS_50, "classifier_arch": "mlp"},
    # The extensions with the consistency view alone elastically distorted
    # (`--view_elastic`): one distortion of the unlabelled batch more per step.
    "shift2_shear025_consistency50_view_elastic16": {**EXTENSIONS_50, "view_elastic": 16.0},
    "shift2_shear05_consistency550_bfloat16": {"augment_shift": 2, "augment_shear": 0.5,
                                               "consistency_weight": 550.0,
                                               "matmul_dtype": "bfloat16"},
}


MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(config_lib.ModelConfig))


def _split(settings: dict):
  """(ModelConfig fields, TrainConfig fields) of a flat settings dict."""
  return ({k: v for k, v in settings.items() if k in MODEL_FIELDS},
          {k: v for k, v in settings.items() if k not in MODEL_FIELDS})


def launcher_defaults() -> config_lib.TrainConfig:
  """The TrainConfig of `python -m experiments.mnist_semisup` without flags (data aside)."""
  model_settings, train_settings = _split(common.SEMISUP_DEFAULTS)
  return config_lib.TrainConfig(model=config_lib.ModelConfig(**model_settings), **train_settings)


def variant_config(name: str) -> config_lib.TrainConfig:
  if name not in VARIANTS:
    raise ValueError(f"Unknown variant {name!r}; choose from {sorted(VARIANTS)}.")
  base = launcher_defaults()
  model_settings, train_settings = _split(VARIANTS[name])
  return dataclasses.replace(base, model=dataclasses.replace(base.model, **model_settings),
                             **train_settings).validate()


def main(argv):
  del argv
  x_l, y_l, x_u = (jnp.asarray(a) for a in throughput._batches())  # pylint: disable=protected-access
  batches = ({"image": x_l, "label": y_l}, {"image": x_u})
  names = ["defaults"] + [n for n in FLAGS.variants if n != "defaults"]
  configs = {name: variant_config(name) for name in names}
  steps, compile_s = {}, {}
  for name, config in configs.items():
    step, state, compile_s[name] = throughput.warm_compiled_step(train_lib, config,
                                                                 config.alpha, batches)
    steps[name] = (step, state)
  times = throughput.time_steps_alternately(steps, batches, FLAGS.windows,
                                            FLAGS.steps_per_window)
  medians = {name: statistics.median(t) for name, t in times.items()}
  rows = {name: {"settings": VARIANTS[name], "ms_per_step": 1e3 * medians[name],
                 "examples_per_s": 2 * throughput.BATCH / medians[name],
                 "relative_cost": medians[name] / medians["defaults"],
                 "compile_s": compile_s[name], "window_ms": [1e3 * t for t in times[name]]}
          for name in names}
  result = {"platform": jax.devices()[0].platform, **machine.describe(),
            "batch": f"{throughput.BATCH} labelled + {throughput.BATCH} unlabelled",
            "windows": FLAGS.windows, "steps_per_window": FLAGS.steps_per_window,
            "variants": rows}
  print(f"{'variant':<38}{'ms/step':>9}{'ex/s':>8}{'relative cost':>15}{'compile s':>11}")
  for name, row in rows.items():
    print(f"{name:<38}{row['ms_per_step']:>9.1f}{row['examples_per_s']:>8.0f}"
          f"{row['relative_cost']:>15.3f}{row['compile_s']:>11.1f}")
  if FLAGS.cost_output:
    with open(FLAGS.cost_output, "w") as f:
      json.dump(result, f, indent=1)
    print(f"written to {FLAGS.cost_output}")


if __name__ == "__main__":
  app.run(main)
