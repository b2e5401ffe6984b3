"""A small authoritative DNS server the DNS tests control (run inside a test namespace, on dnspython).

    python -m tests.support.dnsauth --zone zone.json --listen 203.0.113.53 [--port 53]

The zone file is read again on every query, so a test changes the answers by rewriting it:
{"name": {"A": {"ttl": 30, "values": [...]}, "AAAA": {...}, "CNAME": {"ttl": 30, "values": ["target"]}}};
a record set may instead give "pool": [...] and "pick": n, answered as a subset of n that rotates one step per
query, or with "random": true a fresh random sample of n on every query (a name behind a CDN, whose every
asker gets an answer of its own). A CNAME is followed inside the zone. Over UDP an answer larger than 512 bytes (or the query's EDNS size)
goes out with TC set and no records, so the client retries over TCP. Prints "dnsauth: ready" on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import sys
import threading

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

ROTATION = {}
LOCK = threading.Lock()


def values_of(name, rtype, spec):
    if "pool" not in spec:
        return list(spec.get("values", []))
    pool, pick = spec["pool"], int(spec.get("pick", 1))
    if spec.get("random"):
        return random.sample(pool, min(pick, len(pool)))
    with LOCK:
        step = ROTATION.get((name, rtype), 0)
        ROTATION[(name, rtype)] = step + 1
    return [pool[(step + i) % len(pool)] for i in range(pick)]


ZONES = {}   # zone path -> (stat stamp, zone): read again only when the test rewrites the file


def zone_of(zone_path):
    st = os.stat(zone_path)
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    cached = ZONES.get(zone_path)
    if cached is None or cached[0] != stamp:
        with open(zone_path) as fh:
            cached = ZONES[zone_path] = (stamp, {k.lower().rstrip("."): v for k, v in json.load(fh).items()})
    return cached[1]


def answer(zone_path, wire, udp):
    query = dns.message.from_wire(wire)
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    zone = zone_of(zone_path)
    question = query.question[0]
    name, qtype = question.name.to_text().lower().rstrip("."), dns.rdatatype.to_text(question.rdtype)
    if name not in zone:
        response.set_rcode(dns.rcode.NXDOMAIN)
    for _hop in range(16):
        records = zone.get(name)
        if records is None:
            break
        if "CNAME" in records and qtype != "CNAME":
            target = records["CNAME"]["values"][0]
            response.answer.append(dns.rrset.from_text_list(name + ".", records["CNAME"]["ttl"], "IN", "CNAME",
                                                            [target.rstrip(".") + "."]))
            name = target.lower().rstrip(".")
            continue
        if qtype in records:
            spec = records[qtype]
            response.answer.append(dns.rrset.from_text_list(name + ".", spec["ttl"], "IN", qtype,
                                                            values_of(name, qtype, spec)))
        break
    limit = 65535
    if udp:
        limit = max(512, query.payload) if query.edns >= 0 else 512
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        response.answer = []
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit)


def serve_udp(sock, zone):
    while True:
        data, addr = sock.recvfrom(65535)
        try:
            sock.sendto(answer(zone, data, True), addr)
        except Exception as exc:  # a test server: say it and go on
            print("dnsauth: %s" % exc, file=sys.stderr, flush=True)


def serve_tcp_client(conn, zone):
    with conn:
        while True:
            head = conn.recv(2, socket.MSG_WAITALL)
            if len(head) < 2:
                return
            data = conn.recv(struct.unpack("!H", head)[0], socket.MSG_WAITALL)
            wire = answer(zone, data, False)
            conn.sendall(struct.pack("!H", len(wire)) + wire)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--zone", required=True)
    p.add_argument("--listen", required=True)
    p.add_argument("--port", type=int, default=53)
    args = p.parse_args()
    family = socket.AF_INET6 if ":" in args.listen else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.bind((args.listen, args.port))
    tcp = socket.socket(family, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((args.listen, args.port))
    tcp.listen(64)
    threading.Thread(target=serve_udp, args=(udp, args.zone), daemon=True).start()
    print("dnsauth: ready", file=sys.stderr, flush=True)
    while True:
        conn, dummy = tcp.accept()
        threading.Thread(target=serve_tcp_client, args=(conn, args.zone), daemon=True).start()


if __name__ == "__main__":
    main()
