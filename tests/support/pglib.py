"""A private PostgreSQL cluster for tests: initdb in a temporary folder, started on 127.0.0.1 with a free port.

Debian's postgresql package provides the binaries (scripts/setup installs it for tests); the cluster runs as
the `postgres` user because PostgreSQL refuses to run as root. Nothing of the machine's own PostgreSQL (if
any) is touched."""

import glob
import os
import shutil
import subprocess
import tempfile
import time

from tests.support import free_port


def available():
    return bool(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")) and shutil.which("runuser") is not None


class Postgres:
    def __init__(self):
        self.bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        self.root = tempfile.mkdtemp(prefix="og-pg-")
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, "data")
        self.sock = os.path.join(self.root, "sock")
        os.mkdir(self.sock)
        shutil.chown(self.root, "postgres", "postgres")
        shutil.chown(self.sock, "postgres", "postgres")
        self.port = free_port()
        self._as_postgres("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.start()
        self.counter = 0

    def _as_postgres(self, tool, *args, check=True):
        done = subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(self.bin, tool)] + list(args),
                              capture_output=True, text=True, timeout=120, check=False)
        if check and done.returncode != 0:
            raise RuntimeError("%s failed: %s%s" % (tool, done.stdout, done.stderr))
        return done

    def start(self):
        self._as_postgres("pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "log"), "-w", "-t", "60", "-o",
                          "-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c synchronous_commit=off "
                          "-c full_page_writes=off -c max_connections=200" % (self.port, self.sock), "start")

    def stop(self, mode="fast"):
        self._as_postgres("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def running(self):
        return self._as_postgres("pg_ctl", "-D", self.data, "status", check=False).returncode == 0

    def create_database(self, name=None):
        """A new empty database; returns its SQLAlchemy URL."""
        self.counter += 1
        name = name or "og_%d_%d" % (os.getpid(), self.counter)
        self._as_postgres("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def url(self, name):
        return "postgresql+psycopg://postgres@127.0.0.1:%d/%s" % (self.port, name)

    def destroy(self):
        self.stop("immediate")
        for dummy in range(50):
            if not self.running():
                break
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)
