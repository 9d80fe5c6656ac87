r"""Supervised IE-VAE on MNIST (or Fashion-MNIST): every training example labelled.

  python -m experiments.mnist_supervised --data_dir=../shared/data/mnist
"""

from absl import app

from experiments import common

common.define_flags({"labels": "all", "num_steps": 10000, "lr_schedule": "cosine"})


def main(argv):
  del argv
  common.run("supervised", supervised=True)


if __name__ == "__main__":
  app.run(main)
