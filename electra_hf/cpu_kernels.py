"""Compiled CPU kernels (numba) behind `modeling.dropout_scale_mask`.

The CPU dropout mask (see the comment above `dropout_scale_mask` in modeling.py) is one byte of
numpy's SFC64 stream per element compared with a threshold, ties (byte == threshold) resolved by
a second stream. In numpy that takes five passes per chunk (draw, compare, scale, find ties,
patch ties); here one compiled loop draws the words and records the ties, and a second,
vectorised one writes the mask: one ELECTRA-Small step's 74 masks take 92 ms instead of 139 ms on
the 2-core Xeon (`benchmarks/bench_dropout_mask.py`). `sfc64_dropout_bytes` replays numpy's SFC64
exactly (same state, same words, bytes in little-endian order), so the masks are bit-identical
to the numpy path, which stays the reference and the fallback where numba is not installed.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; the numpy path gives the same masks
    numba = None

# Elements per chunk: the chunk's random words (256 KiB) stay in cache between the two loops.
_CHUNK = 1 << 18

sfc64_dropout_bytes = None  # the compiled kernel below, where numba is installed

if numba is not None:
    _U1, _U3, _U11, _U24, _U40 = (np.uint64(v) for v in (1, 3, 11, 24, 40))
    _LOW_BYTES = np.uint64(0x0101010101010101)
    _HIGH_BITS = np.uint64(0x8080808080808080)

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _draw_words(state, words, count, first_byte, base, ties, num_ties):
        """Fill `words[:count]` from the SFC64 `state` (advanced in place, numpy's algorithm) and
        append to `ties` the element indices (`base` + byte offset) whose byte equals `first_byte`.
        Returns the new number of ties, or -1 if `ties` is full."""
        a, b, c, counter = state[0], state[1], state[2], state[3]
        pattern = np.uint64(first_byte) * _LOW_BYTES
        capacity = ties.shape[0]
        for index in range(count):
            output = a + b + counter
            counter += _U1
            a = b ^ (b >> _U11)
            b = c + (c << _U3)
            c = ((c << _U24) | (c >> _U40)) + output
            words[index] = output
            difference = output ^ pattern  # a zero byte where the byte equals first_byte
            if (difference - _LOW_BYTES) & ~difference & _HIGH_BITS:  # exact "has a zero byte" test
                for offset in range(8):
                    if (difference >> np.uint64(8 * offset)) & np.uint64(0xFF) == 0:
                        if num_ties == capacity:
                            return -1
                        ties[num_ties] = base + 8 * index + offset
                        num_ties += 1
        state[0], state[1], state[2], state[3] = a, b, c, counter
        return num_ties

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _expand(first_bytes, first_byte, scale, out):
        zero = scale * 0
        for index in range(out.shape[0]):
            out[index] = scale if first_bytes[index] > first_byte else zero

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def sfc64_dropout_bytes(state, first_byte, scale, out, ties):
        """`out[i]` = `scale` if byte i of the SFC64 stream > `first_byte`, else 0; the indices of
        bytes equal to `first_byte` go to `ties` (in order). `state`: numpy's SFC64 state words
        (a, b, c, counter), advanced in place. Returns the number of ties, or -1 if `ties` filled up
        (the caller then takes the numpy path)."""
        numel = out.shape[0]
        words = np.empty((min(_CHUNK, numel) + 7) // 8, dtype=np.uint64)
        num_ties = 0
        for start in range(0, numel, _CHUNK):
            size = min(_CHUNK, numel - start)
            count = (size + 7) // 8
            num_ties = _draw_words(state, words, count, first_byte, start, ties, num_ties)
            if num_ties < 0:
                return -1
            _expand(words.view(np.uint8)[:size], np.uint8(first_byte), scale, out[start : start + size])
        # A tie recorded in the unused bytes of the last word is not an element.
        while num_ties > 0 and ties[num_ties - 1] >= numel:
            num_ties -= 1
        return num_ties
