"""og-dns's entry point: read the settings, open the learn sets, serve metrics and DNS until stopped."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading

from og_kernel.og_learn import LearnError

from .config import ConfigError, load
from .forwarder import Forwarder, serve
from .learner import Learner
from .metrics import Metrics
from .spool import Spool

LOG = logging.getLogger("og-dns")


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="og-dns: %(levelname)s %(message)s", stream=sys.stderr)
    try:
        config = load(argv)
        learner = Learner(ipv6=config.ipv6)
    except (ConfigError, LearnError) as exc:
        print("og-dns: %s" % exc, file=sys.stderr)
        return 2
    metrics = Metrics()
    listening = threading.Event()   # set once every listen address is bound (UDP and TCP)

    def health():
        """(ok, reason) for /healthz: og-dns listens and its learn sets can be read."""
        if not listening.is_set():
            return False, "not listening yet on %s port %d" % (",".join(config.listen), config.port)
        return learner.check()

    try:
        spool = Spool(config.spool_dir, config.name, config.spool_max_files, config.unlisted_table, metrics)
        forwarder = Forwarder(config, learner, metrics, spool)
        if config.metrics_listen:
            metrics.serve(*config.metrics_listen, web_config=config.metrics_web_config, health=health)
    except OSError as exc:
        learner.close()
        print("og-dns: cannot start (spool_dir %s, metrics_listen %s): %s" % (
            config.spool_dir, "%s:%d" % config.metrics_listen if config.metrics_listen else "off", exc),
            file=sys.stderr)
        return 2

    def ready():
        listening.set()
        print("og-dns: ready listen=%s port=%d upstreams=%s metrics=%s" % (
            ",".join(config.listen), config.port, ",".join("%s:%d" % u for u in config.upstreams),
            "%s:%d" % config.metrics_listen if config.metrics_listen else "off"), file=sys.stderr, flush=True)

    loop = asyncio.new_event_loop()
    task = loop.create_task(serve(forwarder, ready))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    except OSError as exc:
        print("og-dns: cannot listen: %s" % exc, file=sys.stderr)
        return 2
    finally:
        try:
            spool.flush()
        except OSError as exc:
            LOG.error("cannot write the spool in %s at exit: %s", config.spool_dir, exc)
        learner.close()
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
