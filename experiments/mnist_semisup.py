r"""Semi-supervised IE-VAE on MNIST (or Fashion-MNIST).

  python -m experiments.mnist_semisup --labels=100 --data_dir=../shared/data/mnist

Defaults: the settings chosen on the validation split (see README, "Results").
"""

from absl import app

from experiments import common

common.define_flags(common.SEMISUP_DEFAULTS)


def main(argv):
  del argv
  common.run("semisup", supervised=False)


if __name__ == "__main__":
  app.run(main)
