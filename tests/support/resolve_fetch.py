"""A lab client resolving a name and fetching from every address of the answer at once, over and over.

    python tests/support/resolve_fetch.py NAME [--count N] [--stop FILE] [--interval SECONDS]

Run inside a client namespace (tests/e2e/test_dns.py): each round resolves NAME through the namespace's
resolv.conf (glibc's getaddrinfo, as any program does; no cache in between) and makes a new TCP connection and an
HTTP GET to each address of the answer right away, the moment a client behind a CDN name would. One JSON line per
round on stdout: {"addresses": [...], "results": {address: "ok" | "refused" | "timeout" | "error: ..."}, "t": epoch
seconds at its end} or
{"error": "resolve: ..."}. Stops after N rounds, or when FILE exists (checked before each round).
"""

import argparse
import json
import os
import socket
import sys
import time

TIMEOUT = 2.0


def fetch(address):
    """'ok' when the lab's HTTP service on the address answers as itself (lab_http.py), else what went wrong."""
    try:
        with socket.create_connection((address, 80), timeout=TIMEOUT) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "reset"
    except socket.timeout:
        return "timeout"
    except OSError as exc:
        return "error: %s" % exc
    return "ok" if ("hello from %s:80" % address).encode() in data else "error: answer %r" % data[-80:]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--count", type=int, default=0, help="rounds (0: until --stop's file exists)")
    parser.add_argument("--stop", help="stop before the next round once this file exists")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between rounds")
    args = parser.parse_args()
    done = 0
    while (args.count == 0 or done < args.count) and not (args.stop and os.path.exists(args.stop)):
        if done and args.interval:
            time.sleep(args.interval)
        done += 1
        try:
            infos = socket.getaddrinfo(args.name, 80, socket.AF_INET, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            print(json.dumps({"error": "resolve: %s" % exc}), flush=True)
            continue
        addresses = sorted({info[4][0] for info in infos})
        print(json.dumps({"addresses": addresses, "results": {a: fetch(a) for a in addresses}, "t": time.time()}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
