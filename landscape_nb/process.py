"""Process-wide tuning: glibc's heap (``keep_heap_top``), torch's threads (``set_threads``) and
libgomp's idle threads (``release_openmp_threads``).

Nothing here runs on import. The CLI and the Dask workers landscape_nb starts call ``keep_heap_top``
at start; an in-process ``compute_surface`` calls it once (``heap_policy``: documented there, recorded
in the provenance, and skipped with ``LANDSCAPE_NB_MALLOC=default``). Threads are set by worker
plugins only.
"""
from __future__ import annotations

import os

import torch

from .errors import LandscapeError

HEAP_TOP_PAD = 256 << 20
MMAP_THRESHOLD = 32 << 20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)


def keep_heap_top(n_bytes: int = HEAP_TOP_PAD) -> bool:
    """Ask glibc to keep ``n_bytes`` of freed heap top instead of returning it to the OS, and
    to serve blocks up to 32 MiB from its heaps rather than fresh mmaps.

    CPU evaluation allocates and frees the same multi-megabyte activations for every batch;
    when glibc trims them away each time, the next batch page-faults them back in
    (resnet20-digits on 2 cores: 51 vs 54–64 ms per point, and batches of 1797 ran up to
    1.7× slower). This changes the whole process, so only entry points that own their
    process call it: the CLI and the Dask workers landscape_nb starts (their plugin). Returns
    False where the C library is not glibc.
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # M_TOP_PAD turns off glibc's adaptive mmap threshold; left at 128 KiB, every activation of
    # a thread's arena (Dask runs tasks in threads) became a fresh mmap: 3.5x slower there
    return bool(libc.mallopt(-2, int(n_bytes))) and bool(libc.mallopt(-3, MMAP_THRESHOLD))  # TOP_PAD, MMAP_THRESHOLD


def heap_policy() -> str:
    """Apply ``keep_heap_top`` once for in-process evaluation unless ``LANDSCAPE_NB_MALLOC=default``;
    returns what holds now, for the provenance: "kept" (glibc told to keep freed heap top),
    "default" (opted out) or "unchanged" (not glibc)."""
    global _HEAP
    if _HEAP is None:
        value = os.environ.get("LANDSCAPE_NB_MALLOC", "").strip().lower()
        if value not in ("", "default", "kept"):
            raise LandscapeError(f"LANDSCAPE_NB_MALLOC={value!r}; expected 'default' (leave malloc alone) or "
                                 "unset / 'kept' (keep freed heap top mapped)")
        _HEAP = "default" if value == "default" else "kept" if keep_heap_top() else "unchanged"
    return _HEAP


_HEAP: str | None = None


def set_threads(n: int) -> None:
    """Torch intra-op threads (used by worker plugins; the in-process path leaves them alone)."""
    torch.set_num_threads(max(1, int(n)))


def release_openmp_threads() -> bool:
    """Let the idle OpenMP threads of the calling thread exit, so that torch work in another
    thread runs at full speed; True if a libgomp took the request (also when the calling thread
    had no threads to release), False where there is no libgomp.

    Each thread that runs a parallel torch op gets its own OpenMP team. Once libgomp manages
    more threads than there are CPUs (the kernel's main thread ran any torch op, and now a
    worker thread computes), it stops spin-waiting between parallel regions and sleeps on a
    futex instead: every op then pays a wake-up (resnet20-digits forward on 2 cores: 12.5 ms in
    the main thread, 21-28 ms in a second thread, 12.5 ms there after this call; the
    Explorer's in-process surface 13 vs 23 ms a point). Calls libgomp's
    ``omp_pause_resource_all`` (OpenMP 5.0) on the calling thread's own pool; its next
    parallel op starts a new team. Linux builds of torch use libgomp; elsewhere (another
    OpenMP runtime, or none loaded) this does nothing and returns False.
    """
    import ctypes
    import platform

    if platform.system() != "Linux":
        return False
    try:
        with open("/proc/self/maps") as maps:
            fields = (line.split(None, 5) for line in maps)  # address perms offset dev inode path
            paths = {f[5].strip() for f in fields if len(f) == 6 and "libgomp" in f[5].rsplit("/", 1)[-1]}
    except OSError:
        return False
    released = False
    for path in sorted(paths):
        try:
            pause = ctypes.CDLL(path).omp_pause_resource_all  # already loaded: the same library
        except (OSError, AttributeError):
            continue
        pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
        released |= pause(1) == 0  # omp_pause_soft; -1 inside a parallel region (never from Python)
    return released


__all__ = ["keep_heap_top", "heap_policy", "set_threads", "release_openmp_threads", "HEAP_TOP_PAD",
           "MMAP_THRESHOLD"]
