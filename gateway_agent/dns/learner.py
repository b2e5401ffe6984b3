"""og-dns's learn sets on a thread of their own.

pyroute2's synchronous IPSet drives an asyncio loop of its own for every call, and that loop cannot run inside
og-dns's (RuntimeError: Cannot run the event loop while another loop is running). So the netlink socket lives on
one worker thread: made there, used there, closed there. Adds run one at a time and in order, and the answer
waits for its add (answer after allow) while the event loop goes on serving other queries.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout

from og_kernel.og_learn import LearnError, LearnSets


class Learner(object):
    """LearnSets(ipv6) behind one worker thread; LearnError from the constructor as from LearnSets itself.

    check_every: how long a check's result answers /healthz. Every client host's og-route probes every gateway,
    and each check waits its turn on the thread the answers' adds use: one check a second at most, whatever the
    number of probes, keeps the probes off the answers' path.
    """

    def __init__(self, ipv6=False, factory=LearnSets, check_every=1.0, clock=time.monotonic):
        self.check_every = check_every
        self.clock = clock
        self._checked = None          # (when, result) of the newest check
        self._check_lock = threading.Lock()  # probes come on the metrics server's threads: one check at a time
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="og-dns-learn")
        try:
            self.sets = self.executor.submit(factory, ipv6=ipv6).result()
        except BaseException:
            self.executor.shutdown(wait=True)
            raise

    async def add(self, items):
        """LearnSets.add(items) on the worker thread; returns how many were added, raises its LearnError."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.sets.add, list(items))

    async def delete(self, items):
        """LearnSets.delete(items) on the worker thread, after every add before it."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.sets.delete, list(items))

    def check(self, timeout=5.0):
        """(ok, reason): the learn sets could be read at most check_every seconds ago (LearnSets.check on the worker
        thread, behind any add); probes that come meanwhile, or while a check runs, get that check's result."""
        if self.executor is None:
            return False, "learn sets closed"
        with self._check_lock:
            if self._checked is not None and self.clock() - self._checked[0] < self.check_every:
                return self._checked[1]
            result = self._check(timeout)
            self._checked = (self.clock(), result)
            return result

    def _check(self, timeout):
        executor = self.executor
        if executor is None:
            return False, "learn sets closed"
        try:
            executor.submit(self.sets.check).result(timeout=timeout)
        except LearnError as exc:
            return False, str(exc)
        except FuturesTimeout:
            return False, "learn sets did not answer within %gs" % timeout
        except (OSError, RuntimeError) as exc:   # RuntimeError: the executor was shut down meanwhile
            return False, "learn sets cannot be read: %s" % exc
        return True, "ok"

    def close(self):
        if self.executor is None:
            return
        self.executor.submit(self.sets.close).result()
        self.executor.shutdown(wait=True)
        self.executor = None
