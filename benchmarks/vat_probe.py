r"""How small the VAT power iteration's probe may be in float32 (`objective.VAT_XI`).

  python -m benchmarks.vat_probe --run=runs/bench/semisup100-seed1-ext-shear025-balance10-lr2e-3-25k \
      --data_dir=../shared/data/mnist --output=benchmarks/results/vat_probe.json

On a trained run's classifier and 200 binarised unlabelled images, the direction of
d KL(q(y | x) || q(y | x + r)) / dr at r = xi d (d a unit random draw), the direction
`objective.virtual_adversarial` scales to epsilon, is computed in float32 (as training
does) and in float64, for several xi; prints and writes the cosine between the two per
image. A probe too small for float32 gives a direction of rounding noise.
"""

import json

from absl import app, flags
import jax
import numpy as np

flags.DEFINE_string("run", None, "Workdir of a finished run.", required=True)
flags.DEFINE_string("data_dir", None, "Directory of the IDX files (else TFDS).")
flags.DEFINE_list("xis", ["1e-6", "1e-3", "1e-1"], "Probe norms to compare.")
flags.DEFINE_integer("images", 200, "Unlabelled images to probe.")
flags.DEFINE_string("output", None, "JSON path.", required=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  jax.config.update("jax_enable_x64", True)   # float64 reference; the float32 pass casts
  import jax.numpy as jnp
  from benchmarks.finished_runs import finished_runs
  from ievae_jax import model, objective

  run = next(finished_runs([f"run={FLAGS.run}"], FLAGS.data_dir))
  n = FLAGS.images
  rng = np.random.default_rng(0)
  grey = np.asarray(run.splits.unlabelled_images[:n], np.float64) / 255.0
  x = (rng.random(grey.shape) < grey).astype(np.float64)       # as the step binarises
  d = rng.normal(size=x.shape)
  d /= np.linalg.norm(d.reshape(n, -1), axis=1).reshape(-1, 1, 1, 1)

  def direction(dtype, xi):
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), run.params)
    images = jnp.asarray(x, dtype)
    target = model.classify(params, images)
    divergence = lambda r: jnp.sum(objective.consistency(target, model.classify(params, images + r)))
    g = np.asarray(jax.grad(divergence)(jnp.asarray(xi * d, dtype)), np.float64).reshape(n, -1)
    return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-300)

  results = {"run": FLAGS.run, "images": n, "current_xi": objective.VAT_XI, "by_xi": {}}
  for xi in map(float, FLAGS.xis):
    cosine = np.sum(direction(jnp.float32, xi) * direction(jnp.float64, xi), axis=1)
    row = {"median": float(np.median(cosine)), "p10": float(np.percentile(cosine, 10)),
           "min": float(cosine.min())}
    results["by_xi"][f"{xi:g}"] = row
    print(f"xi={xi:g}: cosine of the float32 direction with float64's: median "
          f"{row['median']:.4f}, 10th percentile {row['p10']:.4f}, min {row['min']:.4f}")
  with open(FLAGS.output, "w") as f:
    json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
