"""Load benchmark: R2END (fp32, int8) vs generative LLM recommenders under Locust; see :mod:`loadtest.bench`.

python scripts/bench_load.py [--levels 1,2,4,8,16,32] [--duration 30] [--models smollm2-135m,qwen2.5-coder-1.5b] [--out docs/BENCHMARKS.md]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.bench import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
