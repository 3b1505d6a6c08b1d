"""Protect+unprotect of a 1200-byte MXP packet vs the bare AEAD seal+open, in one run.

Usage: python benchmarks/bench_mxp_protection.py [--quick]
The last line of output is one JSON object with the figures (microseconds per packet; medians
unless named best_*).
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


def lockstep_us(
    fns: dict[str, Callable[[], None]], batch: int, samples: int
) -> dict[str, list[float]]:
    """Per-call times of each function, one batch of each per sample, so that load changes
    on a shared machine hit all of them alike."""
    for fn in fns.values():
        fn()
    results: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(samples):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(batch):
                fn()
            results[name].append((time.perf_counter() - start) / batch * 1e6)
    return results


def measure(batch: int, samples: int) -> dict[str, float]:
    """Protect+unprotect of one 1200-byte packet and the bare AEAD seal+open, in lockstep
    (microseconds per packet: medians, best_*, and the median of per-sample ratios)."""
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

    times = lockstep_us(
        {"bare_us": bare, "bindings_us": via_bindings, "protect_us": protect_unprotect},
        batch,
        samples,
    )
    figures = {name: round(statistics.median(values), 3) for name, values in times.items()}
    figures["best_bare_us"] = round(min(times["bare_us"]), 3)
    figures["best_protect_us"] = round(min(times["protect_us"]), 3)
    ratios = [p / b for p, b in zip(times["protect_us"], times["bare_us"], strict=True)]
    figures["ratio_protect_vs_bare"] = round(statistics.median(ratios), 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples (CI smoke run)")
    args = parser.parse_args()
    batch, samples = (200, 25) if args.quick else (500, 201)
    figures: dict[str, float | int | str] = dict(measure(batch, samples))
    ratio = figures["ratio_protect_vs_bare"]
    figures["packet_bytes"] = PACKET
    figures["mode"] = "quick" if args.quick else "full"
    # absolute times swing with machine load; the ratio is the comparable figure
    figures["load_avg_1m"] = round(os.getloadavg()[0], 2)

    print(f"packet size                       {PACKET} bytes")
    print(f"bare AEAD seal+open (cffi)        {figures['bare_us']:.2f} us")
    print(f"nacl.bindings seal+open           {figures['bindings_us']:.2f} us")
    print(f"MXP protect+unprotect             {figures['protect_us']:.2f} us")
    print(f"ratio protect+unprotect / bare    {ratio:.2f}x (median of per-sample ratios)")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
