# Four timed steps of option_cost variants; see generative_steps_cond_probe.json.
import sys
import time

import jax
import jax.numpy as jnp

from benchmarks import option_cost, throughput
from ievae_jax import train_lib
x_l, y_l, x_u = (jnp.asarray(a) for a in throughput._batches())
batches = ({"image": x_l, "label": y_l}, {"image": x_u})
for name in sys.argv[1:]:
  config = option_cost.variant_config(name)
  state = train_lib.create_train_state(jax.random.key(0), config)
  t = time.perf_counter()
  step = train_lib.make_train_step(config, alpha=config.alpha).lower(state, *batches).compile()
  print(name, "compile", time.perf_counter() - t, flush=True)
  for i in range(4):
    t = time.perf_counter(); state, m = step(state, *batches); jax.block_until_ready(m)
    print(name, i, time.perf_counter() - t, flush=True)
