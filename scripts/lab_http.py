"""A tiny HTTP service for the lab's "internet" hosts: says who it is, and serves N bytes on request.

GET /            -> "hello from <address>:<port>\n"
GET /bytes/<n>   -> n bytes (for traffic accounting tests)
POST /sink       -> reads the body and answers with its length (client -> internet traffic)
"""

import argparse
import http.server
import re
import socket
import socketserver
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        match = re.match(r"^/bytes/(\d{1,10})$", self.path)
        if match:
            size = int(match.group(1))
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * 65536
            while size > 0:
                self.wfile.write(chunk[:size])
                size -= len(chunk)
            return
        body = ("hello from %s:%d\n" % self.server.server_address[:2]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        remaining = length
        while remaining > 0:
            remaining -= len(self.rfile.read(min(remaining, 65536)))
        body = ("%d\n" % length).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Server6(Server):
    address_family = socket.AF_INET6


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("listen", nargs="+", help="ADDRESS:PORT to serve on (several allowed)")
    args = parser.parse_args()
    servers = []
    for item in args.listen:
        host, dummy, port = item.rpartition(":")
        host = host.strip("[]")
        servers.append((Server6 if ":" in host else Server)((host, int(port)), Handler))
    for srv in servers[1:]:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
