"""What CPU a benchmark ran on, for its JSON.

Wall times on "the 2-core CPU" are not comparable across sessions on their own: the
machine behind it changes (on 2026-12-06 an AVX2-only AMD EPYC took 256 s per 1,000
steps of the extensions' training step alone, against 147 s on 2026-12-03, whose CPU
was not recorded; ACCURACY_LOG, thirty-eighth pass). Every timing JSON therefore
carries the CPU's model and vector extensions.
"""

import os

# The extensions that change what XLA's CPU kernels can use (AVX512 and AMX last).
VECTOR_EXTENSIONS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")


def parse_cpuinfo(text: str) -> dict:
  """The first processor's model name and vector extensions from /proc/cpuinfo text.

  Returns {"cpu_model": str or None, "cpu_vector_extensions": [names present, in
  VECTOR_EXTENSIONS' order]}.
  """
  model, flags = None, set()
  for line in text.splitlines():
    key, _, value = line.partition(":")
    key = key.strip()
    if key == "model name" and model is None:
      model = value.strip()
    elif key == "flags" and not flags:
      flags = set(value.split())
  return {"cpu_model": model,
          "cpu_vector_extensions": [name for name in VECTOR_EXTENSIONS if name in flags]}


def describe(cpuinfo_path: str = "/proc/cpuinfo") -> dict:
  """{"cpu_model", "cpu_vector_extensions", "cpu_count"} of this machine; the first two
  are None where there is no /proc/cpuinfo (not Linux)."""
  try:
    with open(cpuinfo_path) as f:
      found = parse_cpuinfo(f.read())
  except OSError:
    found = {"cpu_model": None, "cpu_vector_extensions": None}
  return {**found, "cpu_count": os.cpu_count()}
