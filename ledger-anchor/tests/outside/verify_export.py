"""Verify a fedledger ledger export with an outside implementation of RFC 9162 and the C2SP
formats: the Python package tlog-scales (not ours).

Usage: python verify_export.py EXPORT_DIR

Checks, with tlog-scales alone (Merkle hashing, proofs, signed notes, cosignature/v1):
  - every checkpoint under checkpoints/ and the latest one carry a valid log signature by the
    key in log.vkey, and every cosignature line by a key in witnesses.vkeys verifies;
  - tlog-scales' own tile writer, fed the entries, computes the root of every checkpoint;
  - every proofs/<i> (C2SP tlog-proof@v1) proves entries/<i> in the latest checkpoint;
  - tlog-scales' consistency proof from every checkpoint to the latest verifies.
Prints one line per check group and exits non-zero on the first failure.
"""

import sys
import tempfile
from pathlib import Path

from tlog_scales import backend, reader, signing, tiles, tlog, utils, writer


def fail(msg: str) -> None:
    print(f"FAILED {msg}")
    sys.exit(1)


def verify_signatures(name: str, cp: tlog.Checkpoint, log_key: signing.Vkey, witnesses):
    try:
        cp.verify(log_key)
    except Exception as e:  # noqa: BLE001 - any failure is a failed check
        fail(f"{name}: log signature: {e}")
    cosigned = 0
    for sig in cp.signatures:
        for w in witnesses:
            if w.match(sig):
                try:
                    w.get_verifier().verify_note(sig, cp)
                except Exception as e:  # noqa: BLE001
                    fail(f"{name}: cosignature by {w.name}: {e}")
                cosigned += 1
    return cosigned


def parse_tlog_proof(text: str):
    lines = text.split("\n")
    if lines[0] != "c2sp.org/tlog-proof@v1":
        fail(f"not a tlog-proof: {lines[0]!r}")
    i = 1
    if lines[i].startswith("extra "):
        i += 1
    if not lines[i].startswith("index "):
        fail("tlog-proof without an index line")
    index = int(lines[i][len("index "):])
    i += 1
    hashes = []
    while lines[i] != "":
        hashes.append(utils.b64dec(lines[i]))
        i += 1
    checkpoint = "\n".join(lines[i + 1:])
    return index, hashes, checkpoint


def main() -> None:
    export = Path(sys.argv[1])
    log_key = signing.Vkey.from_string(export.joinpath("log.vkey").read_text().strip())
    witnesses = [
        signing.Vkey.from_string(line)
        for line in export.joinpath("witnesses.vkeys").read_text().splitlines()
        if line
    ]
    latest_text = export.joinpath("checkpoint").read_text()
    latest = tlog.Checkpoint.from_text(latest_text)
    if latest.origin != log_key.name:
        fail("checkpoint origin differs from the log key's name")
    cosigned = verify_signatures("checkpoint", latest, log_key, witnesses)
    checkpoints = {}
    for p in sorted(export.joinpath("checkpoints").iterdir(), key=lambda p: int(p.name)):
        cp = tlog.Checkpoint.from_text(p.read_text())
        if cp.size != int(p.name):
            fail(f"checkpoints/{p.name} has size {cp.size}")
        verify_signatures(f"checkpoints/{p.name}", cp, log_key, witnesses)
        checkpoints[cp.size] = cp
    print(f"ok signatures: {len(checkpoints)} checkpoints signed by the log; "
          f"latest cosigned by {cosigned} witness(es)")

    size = latest.size
    entries = [export.joinpath("entries", str(i)).read_bytes() for i in range(size)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tiles"
        w = writer.TilesWriter.create(root, latest.origin)
        for e in entries:
            w.add_leaf(e)
        w.commit([signing.DummySigner()], gc=False)
        r = reader.TilesReader(backend.LocalBackend(root))
        r.set_size(size)
        for s, cp in checkpoints.items():
            if s == 0:
                continue
            if r.mth(0, s) != cp.root_hash:
                fail(f"checkpoints/{s}: tlog-scales computes another root from the entries")
        if r.mth(0, size) != latest.root_hash:
            fail("checkpoint: tlog-scales computes another root from the entries")
        print(f"ok roots: tlog-scales recomputes the root of every checkpoint from {size} entries")
        for s, cp in checkpoints.items():
            if 0 < s < size:
                try:
                    r.get_consistency_proof(s, size).check(cp.root_hash, latest.root_hash)
                except Exception as e:  # noqa: BLE001
                    fail(f"checkpoints/{s}: consistency with the latest: {e}")
        print("ok consistency: every checkpoint is consistent with the latest")

    for i in range(size):
        index, hashes, cp_text = parse_tlog_proof(export.joinpath("proofs", str(i)).read_text())
        if index != i:
            fail(f"proofs/{i} proves index {index}")
        if cp_text != latest_text:
            fail(f"proofs/{i} embeds another checkpoint")
        try:
            tlog.InclusionProof(index, size, hashes).check(tiles.leaf_hash(entries[i]), latest.root_hash)
        except Exception as e:  # noqa: BLE001
            fail(f"proofs/{i}: {e}")
    print(f"ok proofs: {size} inclusion proofs verify")


if __name__ == "__main__":
    main()
