"""numpy work split between threads: numpy releases the GIL in sorts, searches, gathers and
element-wise arithmetic, so row chunks run side by side (BLAS has threads of its own)."""

from concurrent.futures import ThreadPoolExecutor

THREADS = 2


def parallel_map(fn, items) -> list:
    """`[fn(item) for item in items]`, computed by THREADS threads."""
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(fn, items))
