"""Host memory allocator settings for CPU tensor work (glibc).

PyTorch allocates CPU tensors with plain ``malloc``. glibc serves blocks above its mmap threshold
(dynamic, at most 32 MiB) with a fresh ``mmap`` and unmaps them when they are freed, and returns
freed memory at the top of the heap to the system past a 128 KiB trim threshold. A segmentation
network at street-scene resolution allocates and frees activations of tens of MiB on every forward,
so every forward faults its activations in again, one 4 KiB page at a time, and the kernel zeroes
each page. Measured with ``bench/allocator.py`` on 2 CPU cores: a 0.8 M-parameter model's forward
spent about a fifth of its time in page faults (190 000 per four 1024×512 images), a training step
about an eighth.

:func:`tune_host_allocator` raises both thresholds, so freed blocks stay in the heap and the next
step reuses them — what torch's CUDA caching allocator does on the GPU. The price is that the
process keeps its peak resident set instead of handing memory back between steps, which training,
evaluation and pseudo-labelling reach again at every step anyway (+7–12 % peak measured); with images of
varied sizes the free blocks fragment, and the resident set plateaued at ~1.7× glibc's over 480 images.

The ``adaptseg`` command line, the benches and the test suite call it once at start-up; importing the package does
not (a library should not change its host process's allocator). ``ADAPTSEG_MALLOC=system`` keeps
glibc's defaults. Elsewhere (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

#: Environment variable: ``system`` keeps the C library's defaults.
ENV_VAR = "ADAPTSEG_MALLOC"

# mallopt(3) parameter numbers (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap and are reused after free. Every activation of the zoo's
#: presets at training and inference sizes is smaller; a rarer larger block keeps its own mapping.
MMAP_THRESHOLD = 1 << 30
#: Free memory at the top of the heap kept for the next step (the largest value ``mallopt`` takes).
TRIM_THRESHOLD = (1 << 31) - 1


def tune_host_allocator() -> bool:
    """Make glibc keep and reuse freed large blocks (see the module docstring).

    Returns whether the settings were applied: False with ``ADAPTSEG_MALLOC=system``, on a C library
    other than glibc, or when ``mallopt`` refuses a value.
    """
    choice = os.environ.get(ENV_VAR, "tuned").strip().lower()
    if choice == "system":
        return False
    if choice != "tuned":
        log.warning(
            "%s=%r is not 'tuned' or 'system'; keeping the C library's allocator defaults", ENV_VAR, choice
        )
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # older glibc refuses mmap thresholds above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit): fall back to that
    applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) or mallopt(_M_MMAP_THRESHOLD, 32 << 20))
    applied = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and applied
    if not applied:
        log.debug("mallopt refused adaptseg's thresholds; keeping glibc's defaults")
    return applied
