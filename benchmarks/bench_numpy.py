"""NumPy backend: a solve VJP against the forward and against an inverse-based VJP.

python benchmarks/bench_numpy.py [repeats]     (the same as `invad bench`)
"""

import sys

from invad.bench import main

if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 15))
