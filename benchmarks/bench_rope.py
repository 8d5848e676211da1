"""RoPE speed on this machine: the same run as ``ropelab bench`` (see ropelab/bench.py).

Run: python benchmarks/bench_rope.py [--quick] [--out DIR] [--reps N] [--no-compile] [--no-jax]
"""

from __future__ import annotations

import argparse
import sys

from ropelab import bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_arguments(parser)
    sys.exit(bench.run(parser.parse_args()))
