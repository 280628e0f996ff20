"""One seed derivation for every random stream of a run: `derive_seed(seed, stream, *keys)`.

Streams in use: "process" (rank), "sampler" (epoch), "augment" (epoch, image index), "workers" (epoch).
Distinct key tuples give unrelated seeds (numpy's SeedSequence hashes the whole tuple), so (s, e) and
(s + 1, e - 1) do not clash, and a resumed or re-sharded run derives exactly the same seeds.
"""
import zlib

import numpy as np


def _entropy(key):
    if isinstance(key, str):
        return zlib.crc32(key.encode())
    return int(key) % 2**64  # SeedSequence takes non-negative ints: SEED -1 is allowed


def derive_seed(seed, *keys):
    """A 63-bit seed (a valid torch / numpy seed) from the run's `seed` and `keys` (ints or stream names)."""
    state = np.random.SeedSequence([_entropy(k) for k in (seed, *keys)]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & 0x7FFF_FFFF_FFFF_FFFF
