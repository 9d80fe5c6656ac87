"""The README's first-screen commands stay what CI and the launchers run."""

import os
import re

from tests.conftest import REPO


def _read(*path):
  with open(os.path.join(REPO, *path)) as f:
    return f.read()


def _indented_commands(text):
  """The README's indented code lines (4 spaces), in order."""
  return [line[4:] for line in text.splitlines() if line.startswith("    ") and line.strip()]


def test_ci_runs_exactly_the_readme_test_command():
  readme = _read("README.md")
  first_screen = readme.split("## ", 1)[0]
  commands = _indented_commands(first_screen)
  tests = [c for c in commands if "pytest" in c]
  assert len(tests) == 1, commands
  ci_lines = [l.strip() for l in _read(".ci", "run").splitlines()
              if l.strip() and not l.lstrip().startswith("#")]
  assert ci_lines[-1] == tests[0], (ci_lines[-1], tests[0])


def test_readme_main_job_sets_up_from_the_project_and_runs_the_semisup_launcher():
  first_screen = _read("README.md").split("## ", 1)[0]
  setup = [c for c in _indented_commands(first_screen) if "experiments." in c]
  assert len(setup) == 1, setup
  assert 'pip install -e ".[test]"' in setup[0]
  launcher = re.search(r"python -m (experiments\.\w+)", setup[0]).group(1)
  assert launcher == "experiments.mnist_semisup"
  assert os.path.isfile(os.path.join(REPO, *launcher.split(".")) + ".py")
  assert "[options.extras_require]" in _read("setup.cfg") and "test =" in _read("setup.cfg")
