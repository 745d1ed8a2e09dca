#!/usr/bin/env python
"""Soak: delete(part_integrity="cascade") against an independent calculation of the rules.

A master ``Recording`` has parts ``Channel`` and ``Link``; ``Link`` references a channel of
any recording under a renamed key (``-> master.Channel.proj(other_id='id')``).  Each case
fills random rows, deletes one or two random links with ``part_integrity="cascade"`` and
compares what is left with a plain-Python fixed point of the rules: a row goes when it is
restricted, when it references a row that goes, or when it is the master of a part row that
goes (and then all its parts go).  Prints the mismatches and their number; exit code 1 if any.

Usage:  python benchmarks/soak_cascade_rules.py [--cases 150] [--seed 1]
            [--backend sqlite|postgresql|mysql|all]
"""

from __future__ import annotations

import argparse
import random
import tempfile

import joinflow as dj
from joinflow import testing

URLS = {"postgresql": testing.PG_URL, "mysql": testing.MYSQL_URL}


def run(backend: str, cases: int, seed: int) -> int:
    url = URLS.get(backend) or f"sqlite:///{tempfile.mkdtemp()}/soak.db"
    config = dj.config.copy()
    config["safemode"] = False
    conn = dj.Connection(url=url, config=config)
    name = testing.unique_schema_name("soak")
    schema = dj.Schema(name, connection=conn)
    mismatches = 0
    try:
        @schema
        class Recording(dj.Manual):
            definition = """
            id : int32
            """

            class Channel(dj.Part):
                definition = """
                -> master
                ch : int32
                """

            class Link(dj.Part):
                definition = """
                -> master
                link : int32
                ---
                -> master.Channel.proj(other_id='id')
                """

        rng = random.Random(seed)
        for _ in range(cases):
            masters = [1, 2, 3, 4]
            channels = [(m, c) for m in masters for c in (1, 2) if rng.random() < 0.7]
            links = [(m, k, *rng.choice(channels)) for m in masters for k in (1, 2)
                     if channels and rng.random() < 0.6]
            if not links:
                continue
            seeds = {rng.choice(links)[:2] for _ in range(rng.choice((1, 2)))}
            Recording.insert([{"id": m} for m in masters])
            Recording.Channel.insert([{"id": m, "ch": c} for m, c in channels])
            Recording.Link.insert([{"id": m, "link": k, "other_id": o, "ch": c} for m, k, o, c in links])
            gone_m, gone_c, gone_l = set(), set(), {r for r in links if r[:2] in seeds}
            while True:
                before = (len(gone_m), len(gone_c), len(gone_l))
                gone_m |= {r[0] for r in gone_l} | {r[0] for r in gone_c}
                gone_c |= {r for r in channels if r[0] in gone_m}
                gone_l |= {r for r in links if r[0] in gone_m or (r[2], r[3]) in gone_c}
                if (len(gone_m), len(gone_c), len(gone_l)) == before:
                    break
            (Recording.Link & [{"id": m, "link": k} for m, k in seeds]).delete(part_integrity="cascade")
            got = (sorted(r["id"] for r in Recording.to_dicts()),
                   sorted((r["id"], r["ch"]) for r in Recording.Channel.to_dicts()),
                   sorted((r["id"], r["link"], r["other_id"], r["ch"]) for r in Recording.Link.to_dicts()))
            expected = (sorted(set(masters) - gone_m), sorted(set(channels) - gone_c), sorted(set(links) - gone_l))
            if got != expected:
                mismatches += 1
                print(f"{backend}: MISMATCH channels={channels} links={links} seeds={seeds}\n"
                      f"  left {got}\n  expected {expected}")
            Recording.Link.delete_quick()
            Recording.Channel.delete_quick()
            Recording.delete_quick()
    finally:
        testing.drop_schemas(conn, [name])
        conn.close()
    print(f"{backend}: {cases} cases, {mismatches} mismatches")
    return mismatches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", default="all", choices=["sqlite", "postgresql", "mysql", "all"])
    args = parser.parse_args()
    backends = ["sqlite", "postgresql", "mysql"] if args.backend == "all" else [args.backend]
    bad = sum(run(b, args.cases, args.seed) for b in backends)
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
