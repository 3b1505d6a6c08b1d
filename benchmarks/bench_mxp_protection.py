"""Protect+unprotect of a 1200-byte MXP packet vs the bare AEAD seal+open, in one run.

Usage: python benchmarks/bench_mxp_protection.py [--quick]
The last line of output is one JSON object with the figures (microseconds, medians).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

from nacl import bindings
from nacl._sodium import ffi, lib

from intentus_trio.mxp.keyupdate import OneRttKeys, Opened
from intentus_trio.mxp.packet import CID_LEN, SHORT_PN_OFFSET
from intentus_trio.mxp.protection import TAG_LEN

PACKET = 1200


def median_us(fn: Callable[[], None], batch: int, samples: int) -> float:
    fn()
    results = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        results.append((time.perf_counter() - start) / batch * 1e6)
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples (CI smoke run)")
    args = parser.parse_args()
    batch, samples = (200, 15) if args.quick else (2000, 41)

    key = os.urandom(32)
    nonce = os.urandom(12)
    header = os.urandom(SHORT_PN_OFFSET + 2)
    dcid = os.urandom(CID_LEN)
    payload = os.urandom(PACKET - SHORT_PN_OFFSET - 2 - TAG_LEN)
    out = ffi.new("unsigned char[]", PACKET + TAG_LEN)
    out_len = ffi.new("unsigned long long *")

    def bare() -> None:
        lib.crypto_aead_chacha20poly1305_ietf_encrypt(
            out, out_len, payload, len(payload), header, len(header), ffi.NULL, nonce, key
        )
        sealed = ffi.buffer(out, out_len[0])[:]
        rc = lib.crypto_aead_chacha20poly1305_ietf_decrypt(
            out, out_len, ffi.NULL, sealed, len(sealed), header, len(header), nonce, key
        )
        assert rc == 0

    def via_bindings() -> None:
        sealed = bindings.crypto_aead_chacha20poly1305_ietf_encrypt(payload, header, nonce, key)
        bindings.crypto_aead_chacha20poly1305_ietf_decrypt(sealed, header, nonce, key)

    sender = OneRttKeys(b"k" * 32, b"r" * 32)
    receiver = OneRttKeys(b"r" * 32, b"k" * 32)
    state = {"pn": 0}

    def protect_unprotect() -> None:
        pn = state["pn"]
        state["pn"] = pn + 1
        packet = sender.protect(dcid, pn, pn & 0xFFFF, 2, payload)
        opened = receiver.unprotect(packet, 0.0)
        assert isinstance(opened, Opened)

    assert len(sender.protect(dcid, 0, 0, 2, payload)) == PACKET

    figures: dict[str, float | int | str] = {}
    # interleave the measurements so machine noise hits all of them alike
    rounds: dict[str, list[float]] = {"bare_us": [], "bindings_us": [], "protect_us": []}
    for _ in range(3):
        rounds["bare_us"].append(median_us(bare, batch, samples))
        rounds["bindings_us"].append(median_us(via_bindings, batch, samples))
        rounds["protect_us"].append(median_us(protect_unprotect, batch, samples))
    for name, values in rounds.items():
        figures[name] = round(statistics.median(values), 3)
    ratio = float(figures["protect_us"]) / float(figures["bare_us"])
    figures["ratio_protect_vs_bare"] = round(ratio, 3)
    figures["packet_bytes"] = PACKET
    figures["mode"] = "quick" if args.quick else "full"

    print(f"packet size                       {PACKET} bytes")
    print(f"bare AEAD seal+open (cffi)        {figures['bare_us']:.2f} us")
    print(f"nacl.bindings seal+open           {figures['bindings_us']:.2f} us")
    print(f"MXP protect+unprotect             {figures['protect_us']:.2f} us")
    print(f"ratio protect+unprotect / bare    {ratio:.2f}x")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
