"""Reading W&B's offline run files back in tests, without wandb's own reader or the network."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path


def wandb_records(path: Path) -> list:
    """The protobuf Records of an offline .wandb file (a LevelDB-style log; what `wandb sync` reads)."""
    from wandb.proto import wandb_internal_pb2
    raw, block = path.read_bytes(), 32768
    ident, magic, _version = struct.unpack("<4sHB", raw[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B transaction log"
    records, pos, data = [], 7, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:                                    # block trailer
            pos += left
            continue
        checksum, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if (checksum, length, kind) == (0, 0, 0):       # zero padding
            pos += left
            continue
        chunk = raw[pos + 7:pos + 7 + length]
        assert len(chunk) == length and zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum, \
            f"{path}: corrupt record at byte {pos}"
        pos += 7 + length
        data = chunk if kind in (1, 2) else data + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            records.append(record)
    return records


