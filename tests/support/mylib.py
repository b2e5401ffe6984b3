"""A private MariaDB server for tests: mariadb-install-db in a temporary folder, mariadbd on 127.0.0.1.

Debian's mariadb-server-core and mariadb-client-core provide the binaries (scripts/setup installs them for
tests). The machine's own MariaDB/MySQL (if any) is not touched."""

import os
import shutil
import signal
import subprocess
import tempfile
import time

from tests.support import free_port
from tests.support.nslib import READY_TIMEOUT


def available():
    return all(shutil.which(b) for b in ("mariadb-install-db", "mariadbd", "mariadb"))


class MariaDB:
    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="og-my-")
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        done = subprocess.run(["mariadb-install-db", "--no-defaults", "--user=root", "--datadir=" + self.data,
                               "--auth-root-authentication-method=normal", "--skip-test-db"],
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode:
            raise RuntimeError("mariadb-install-db failed: %s%s" % (done.stdout, done.stderr))
        self.log = open(os.path.join(self.root, "log"), "w")
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", "--user=root", "--datadir=" + self.data,
             "--socket=" + os.path.join(self.root, "sock"), "--port=%d" % self.port, "--bind-address=127.0.0.1",
             "--pid-file=" + os.path.join(self.root, "pid"), "--skip-log-bin", "--innodb-buffer-pool-size=64M",
             "--innodb-flush-log-at-trx-commit=2", "--max-connections=300"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT
        while self.sql("SELECT 1", check=False).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("mariadbd did not start; see %s" % self.log.name)
            time.sleep(0.2)
        self.counter = 0

    def sql(self, statement, check=True):
        done = subprocess.run(["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(self.port), "-u", "root",
                               "-e", statement], capture_output=True, text=True, timeout=60, check=False)
        if check and done.returncode:
            raise RuntimeError("%s: %s" % (statement, done.stderr))
        return done

    def create_database(self):
        self.counter += 1
        name = "og_%d_%d" % (os.getpid(), self.counter)
        self.sql("CREATE DATABASE %s CHARACTER SET utf8mb4 COLLATE utf8mb4_bin" % name)
        return "mysql+pymysql://root@127.0.0.1:%d/%s" % (self.port, name)

    def destroy(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
