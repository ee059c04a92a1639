#!/usr/bin/env python
"""The side-by-side benchmark as a script: ``convpipe bench`` itself (the same command, the same code).

    python benchmarks/run_bench.py --quick --json bench-out/quick.json
    python benchmarks/run_bench.py --shape 32,2048,2048 --chunks 16,512,512 --json bench-out/full.json
    python benchmarks/run_bench.py --suite gpu --json bench-out/gpu.json
"""

import sys
from pathlib import Path

try:
    import convpipe.cli  # noqa: F401
except ImportError:  # running from a checkout without convpipe installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convpipe.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
