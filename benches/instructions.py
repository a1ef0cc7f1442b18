#!/usr/bin/env python3
"""Instructions per rotation by where they go, from two `callgrind_annotate --inclusive=no`
outputs of the same command: one that rotated N credentials and one that found nothing due.
Each function's own instructions are charged to the crate (or C library) it belongs to; the
idle pass's are taken off, so start-up, config and reconcile are not counted.

    python3 benches/instructions.py N idle.txt busy.txt
"""

import re
import sys
from collections import defaultdict

# First match wins: a function's crate is the first path segment of its demangled name (the
# self type's, for `<T as Trait>::f`); C functions are known by name or library.
CATEGORIES = [
    ("SQL: rotor's SQLite store (sqlx-sqlite, rusqlite, SQLite)",
     ("sqlx_sqlite", "rusqlite", "libsqlite3_sys", "flume")),
    ("SQL: the rotated PostgreSQL's protocol (sqlx-postgres)", ("sqlx_postgres",)),
    ("SQL: sqlx's pool and statements (sqlx-core)", ("sqlx_core", "sqlx")),
    ("HTTP to the vault (reqwest, hyper, http)",
     ("reqwest", "hyper", "hyper_util", "h2", "http", "http_body", "httparse", "tower", "url",
      "idna", "percent_encoding")),
    ("TLS (rustls)", ("rustls", "webpki", "rustls_pki_types")),
    ("hashing and key derivation (pbkdf2, hmac, sha2, ring)",
     ("pbkdf2", "hmac", "sha2", "sha1", "digest", "ring", "aws_lc_rs", "aws_lc_sys", "blake3",
      "rand", "rand_core", "rand_chacha", "getrandom", "base64", "hex", "zeroize", "subtle")),
    ("serialisation (serde, serde_json, toml)", ("serde", "serde_json", "toml", "toml_edit",
                                                "toml_datetime", "winnow", "ryu", "itoa", "dtoa")),
    ("metrics encoding (prometheus-client)", ("prometheus_client",)),
    ("logging and traces (tracing)", ("tracing", "tracing_core", "tracing_subscriber",
                                      "opentelemetry", "opentelemetry_sdk", "sharded_slab")),
    ("async runtime (tokio, futures)", ("tokio", "futures_util", "futures_core", "futures_channel",
                                        "futures", "mio", "parking_lot", "parking_lot_core",
                                        "pin_project_lite",
                                        "event_listener", "crossbeam_queue", "crossbeam_utils")),
    ("rotor's own code (rotor, rotators)", ("rotor", "rotators", "rotor_rotators")),
    ("allocation (glibc malloc, free)", ("__rustc",)),
    ("Rust standard library (core, alloc, std)", ("core", "alloc", "std", "hashbrown",
                                                   "foldhash")),
]
OTHER = "everything else"

LINE = re.compile(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*)$")


PRIMITIVES = {"str", "bool", "char", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16",
              "i32", "i64", "i128", "isize", "f32", "f64", "", "dyn", "mut", "const"}


def crate_of(symbol):
    """The first path segment of a demangled Rust name (for `<T as Trait>::f`, T's crate, or
    the trait's when T is a primitive), or a C function's name."""
    first = lambda name: re.split(r"::|<|>| |\(|\[|;|,", name.lstrip("<&*( "), maxsplit=1)[0]
    m = re.match(r"^<(.+?) as (.+?)>::", symbol)
    if m:
        own = first(m.group(1).removeprefix("&").removeprefix("mut ").removeprefix("dyn "))
        # A primitive or a generic parameter (`<T as Trait>`) belongs to no crate.
        if own in PRIMITIVES or re.fullmatch(r"[A-Z]", own):
            return first(m.group(2))
    return first(symbol.removeprefix("<").removeprefix("&").removeprefix("mut ").removeprefix("dyn "))


# glibc's functions by the start of their names (it has variants: __memcpy_avx_unaligned_erms).
GLIBC = [
    (("__mem", "mem", "__str", "str", "bcmp", "__bcmp"),
     "memory copies and compares (memcpy, memmove, memset, memcmp)"),
    (("_int_", "__libc_malloc", "__libc_free", "__libc_realloc", "__libc_calloc", "malloc",
      "free", "realloc", "calloc", "tcache", "unlink_chunk", "cfree"),
     "allocation (glibc malloc, free)"),
]


def category(symbol, library):
    crate = crate_of(symbol)
    for name, crates in CATEGORIES:
        if crate in crates:
            return name
    if "libc.so" in library or "ld-linux" in library:
        for prefixes, name in GLIBC:
            if crate.startswith(prefixes):
                return name
        return "glibc, other"
    if crate.startswith("ring_core"):
        return "hashing and key derivation (pbkdf2, hmac, sha2, ring)"
    # C linked into rotor's binary without a Rust path: SQLite (libsqlite3-sys, bundled).
    if "::" not in symbol and not symbol.startswith("<") and "libsqlite3" not in library:
        return CATEGORIES[0][0]
    if "libsqlite3" in library:
        return CATEGORIES[0][0]
    return OTHER


def read(path):
    """(total, instructions by category, instructions by function) of one annotate output."""
    total, by, functions = None, defaultdict(int), defaultdict(int)
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            count, rest = int(m.group(1).replace(",", "")), m.group(2)
            if rest.startswith(("PROG TOTALS", "PROGRAM TOTALS")):
                total = count
                continue
            if rest.startswith("file:function") or total is None:
                continue
            # "file:function [object]"; a file name holds no ':', a function may.
            _, _, function = rest.partition(":")
            library = ""
            if function.endswith("]") and " [" in function:
                function, _, library = function.rpartition(" [")
            by[category(function, library)] += count
            functions[function] += count
    if total is None:
        sys.exit(f"{path}: no PROG TOTALS line: not callgrind_annotate's output?")
    return total, by, functions


def main():
    n = int(sys.argv[1])
    idle_total, idle, idle_functions = read(sys.argv[2])
    busy_total, busy, busy_functions = read(sys.argv[3])
    per_rotation = (busy_total - idle_total) / n
    listed = sum(busy.values()) - sum(idle.values())
    print(f"{'where':<64} {'instructions':>13} {'share':>6}")
    rows = sorted(((busy[c] - idle[c]) / n, c) for c in set(busy) | set(idle))
    for count, name in reversed(rows):
        print(f"{name:<64} {count / 1e6:>11.3f} M {count / per_rotation:>6.1%}")
    unlisted = per_rotation - listed / n
    print(f"{'below the annotation threshold':<64} {unlisted / 1e6:>11.3f} M "
          f"{unlisted / per_rotation:>6.1%}")
    print(f"{'total per rotation':<64} {per_rotation / 1e6:>11.3f} M")
    print(f"(the run that rotated: {busy_total / 1e6:.0f} M; the one that found nothing due: "
          f"{idle_total / 1e6:.0f} M; {n} rotations)")
    print()
    print(f"{'the functions with the most, each its own instructions':<64} {'instructions':>13}")
    top = sorted(((busy_functions[f] - idle_functions[f]) / n, f) for f in busy_functions)
    for count, function in reversed(top[-15:]):
        shown = function if len(function) <= 62 else function[:59] + "..."
        print(f"  {shown:<62} {count / 1e6:>11.3f} M")


main()
