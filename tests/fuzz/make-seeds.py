#!/usr/bin/env python3
"""tests/fuzz/make-seeds.py: writes the binary seed inputs of the IDX, token
and safetensors harnesses into seeds/ (committed; rerun only to change
them).  Each seed is a small valid file of the format, laid out as the
harness expects its input (fuzz_idx.c: 4-byte length + images + labels;
fuzz_tokens.c: one byte choosing the name, then the file), so that the
fuzzer starts from inputs the reader accepts.  Plan seeds are mpt-plan
output, see fuzz_plan.c.  Standard library only."""
import gzip
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(kind, name, data):
    d = os.path.join(HERE, "seeds", kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def idx(magic_dims, dims, payload):
    return struct.pack(">I", 0x0800 | magic_dims) + b"".join(struct.pack(">I", x) for x in dims) + payload


def idx_pair(images, labels):
    return struct.pack("<I", len(images)) + images + labels


# IDX: n images of r x c and n labels, plain and gzip.
for n, r, c in [(1, 1, 1), (2, 3, 2), (3, 4, 4)]:
    img = idx(3, [n, r, c], bytes((7 * i) % 256 for i in range(n * r * c)))
    lab = idx(1, [n], bytes(i % 10 for i in range(n)))
    put("idx", f"plain-{n}x{r}x{c}", idx_pair(img, lab))
    put("idx", f"gzip-{n}x{r}x{c}", idx_pair(gzip.compress(img, mtime=0), gzip.compress(lab, mtime=0)))

# Tokens: first byte even = "tokens.bin", odd = "tokens.txt".
ids = [5, 1, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6]
hdr = [20240520, 1, len(ids)] + [0] * 253
shard = struct.pack("<256i", *hdr) + struct.pack(f"<{len(ids)}H", *ids)
put("tokens", "llmc-shard", b"\x00" + shard)
put("tokens", "raw-uint16", b"\x00" + struct.pack(f"<{len(ids)}H", *[i * 1000 for i in ids]))
put("tokens", "text", b"\x01" + b"the quick brown fox jumps over the lazy dog\n")

# Safetensors: the writer's layout (metadata first, contiguous offsets,
# header padded with spaces to 8 bytes).
def safetensors(tensors, meta):
    header, data = {}, b""
    if meta:
        header["__metadata__"] = meta
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


put("safetensors", "empty", safetensors([], None))
put("safetensors", "scalar-meta", safetensors([("s", "F32", [], struct.pack("<f", 1.5))], {"step": "3"}))
put("safetensors", "three", safetensors([
    ("w", "F32", [2, 3], struct.pack("<6f", *range(6))),
    ("i", "I64", [2], struct.pack("<2q", -1, 7)),
    ("z", "I32", [0, 4], b""),
], {"format": "pt"}))
