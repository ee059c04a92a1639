"""The C heap as a tile's temporaries need it, once per process that computes tiles.

A tile's chain runs slab by slab on temporaries of a megabyte or two (``convpipe.tiles.SLAB_BYTES``). glibc's
malloc serves blocks above its mmap threshold (128 KiB in a fresh process) with a fresh ``mmap`` each, which
page-faults on every first touch, and returns the top of its heap to the system past a trim threshold; both
thresholds rise only once the process frees an mmapped block larger than the threshold (to that block's
size, at most 32 MiB, the trim threshold to twice it). A run's first tiles, the calibration's probes and any
process whose big blocks never came and went paid the page faults on every temporary: the light benchmark
chain (gaussian -> Sobel magnitude) took 113-117 ms of CPU on a 16 x 512 x 1024 tile in a fresh process
against 57-59 ms once one 31 MiB block had been allocated and freed (``benchmarks/tile_cost.py``). A whole
run's chunk buffers raise the thresholds anyway (12 alternating light runs: no difference beyond the noise);
what this fixes is short computations, the calibration's probes among them.

:func:`warm` allocates and frees that one block. Nothing is configured: glibc adapts as it does in any
process that once freed a large array (``mallopt`` or ``MALLOC_*`` variables set by the user keep
precedence: a fixed threshold is not adapted), and other allocators see one allocation.
"""

from __future__ import annotations

#: Just under glibc's largest adaptive threshold (``DEFAULT_MMAP_THRESHOLD_MAX``, 32 MiB on 64-bit): a block
#: above it leaves the thresholds as they are.
WARM_BYTES = 31 << 20

_warmed = False


def warm() -> None:
    """Allocate and free one :data:`WARM_BYTES` block, once per process (later calls return at once)."""
    global _warmed
    if _warmed:
        return
    _warmed = True
    import numpy as np

    block = np.empty(WARM_BYTES, dtype=np.uint8)
    del block
