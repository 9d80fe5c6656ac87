"""Benchmark helpers that turn run logs into reported numbers."""

import json

from benchmarks import throughput


def test_time_to_error_is_the_first_validation_check_at_or_below_each_target(tmp_path):
  checks = [(1000, 120.0, 0.09), (2000, 250.0, 0.05), (3000, 390.0, 0.052), (4000, 500.0, 0.04)]
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write(json.dumps({"step": 500, "elapsed_s": 60.0, "loss": 1.0}) + "\n")
    for step, elapsed, error in checks:
      f.write(json.dumps({"step": step, "elapsed_s": elapsed, "validation_error": error}) + "\n")
  with open(tmp_path / "results.json", "w") as f:
    json.dump({"test_error": 0.045, "validation_error": 0.04, "steps": 4000,
               "wall_seconds": 510.0}, f)
  row = throughput.time_to_error(str(tmp_path))
  assert row["seconds_to_5%"] == 250.0          # 0.05 counts as reached
  assert row["seconds_to_3.33%"] is None        # never reached
  assert row["best_validation_error"] == 0.04
  assert row["final_test_error"] == 0.045
