r"""Semi-supervised IE-VAE on MNIST (or Fashion-MNIST).

  python -m experiments.mnist_semisup --labels=100 --data_dir=../shared/data/mnist

Defaults: the settings chosen on the validation split (see README, "Results").
"""

from absl import app

from experiments import common

common.define_flags({"labels": 100, "num_steps": 10000, "lr_schedule": "cosine",
                     "log_every": 500, "eval_every": 1000})


def main(argv):
  del argv
  common.run("semisup", supervised=False)


if __name__ == "__main__":
  app.run(main)
