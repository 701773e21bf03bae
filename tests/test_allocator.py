"""keep_freed_memory: a freed large block is reused instead of being mapped (and faulted) again."""

import platform
import subprocess
import sys

import pytest

SCRIPT = """
import ctypes, resource, sys, threading
if sys.argv[1] == "keep":
    from keras_swcnn import allocator
    assert allocator.keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
SIZE = 200 * 2**20
def touch():  # as XLA's runtime does: a large block from a worker thread, written, freed
    block = libc.malloc(SIZE)
    ctypes.memset(block, 1, SIZE)
    libc.free(block)
def in_thread():
    worker = threading.Thread(target=touch)
    worker.start()
    worker.join()
in_thread()  # the first block's pages are new either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
in_thread()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.backend_independent
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_a_freed_block_is_reused_without_page_faults():
    def faults(mode):
        result = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                                check=True)
        return int(result.stdout.split()[-1])

    pages = 200 * 2**20 // 4096
    assert faults("default") > pages // 2  # glibc maps a fresh block: a fault per page
    assert faults("keep") < pages // 20
