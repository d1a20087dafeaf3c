#!/usr/bin/env python3
"""tests/nan_checkpoint.py IN OUT: OUT is the mpt checkpoint IN with every
float of its first parameter tensor (layer 0's first: the MLP's 0.weight, a
language model's token embedding 0.wte, so that every logit turns NaN) set
to NaN and its CRC-32 recomputed, as
lib/train/checkpoint.c documents it.  This is the file a diverged run
would leave if the writer did not refuse non-finite values: the reader's
refusal and --allow-nonfinite-checkpoint are tested on it
(tests/nonfinite_cli.sh).  Written from the format's description, not
from the C code, so it also checks that description."""
import json
import math
import re
import struct
import sys
import zlib

# The metadata the checksum covers: these first, each "key=value", when
# present (they came later); then these, each "key=value\n", in order.
LATER = ["data", "skipped_steps"]
COVERED = ["format", "model", "optimizer", "config", "step", "epoch", "batch_index"]


def main(src, dst):
    raw = bytearray(open(src, "rb").read())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    base = 8 + n
    params = [t["data_offsets"] for name, t in header.items()
              if not name.startswith("optimizer.")]
    begin, end = min(params)
    raw[base + begin:base + end] = struct.pack("<f", math.nan) * ((end - begin) // 4)
    crc = 0
    for key in LATER:
        if key in meta:
            crc = zlib.crc32(("%s=%s" % (key, meta[key])).encode(), crc)
    for key in COVERED:
        crc = zlib.crc32(("%s=%s\n" % (key, meta.get(key, ""))).encode(), crc)
    for begin, end in sorted(t["data_offsets"] for t in header.values()):
        crc = zlib.crc32(bytes(raw[base + begin:base + end]), crc)
    text = raw[8:base].decode()
    signed, count = re.subn(r'("crc32"\s*:\s*")[0-9a-f]{8}"', r'\g<1>%08x"' % crc, text)
    if count != 1:
        sys.exit("nan_checkpoint.py: %s has no crc32 metadata" % src)
    raw[8:base] = signed.encode()  # same length: the offsets stay
    open(dst, "wb").write(raw)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: nan_checkpoint.py IN OUT")
    main(sys.argv[1], sys.argv[2])
