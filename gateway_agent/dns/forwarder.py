"""The forwarder: client query wire -> upstreams -> learn the matched answer's addresses -> answer the client."""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import logging
import os
import socket
import struct
import time

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from og_kernel.og_learn import LearnError
from og_kernel.og_netpolicy import AddressPolicy

from .matcher import DomainsError, Matcher, load_domains, normal

LOG = logging.getLogger("og-dns")


class UpstreamError(Exception):
    """No upstream answered."""


class _UdpExchange(asyncio.DatagramProtocol):
    """One query to one upstream over UDP: the first datagram with the query's id (the socket is connected
    to the upstream, so nothing else reaches it)."""

    def __init__(self, wire):
        self.wire = wire
        self.qid = wire[:2]
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        transport.sendto(self.wire)

    def datagram_received(self, data, addr):
        if len(data) >= 12 and data[:2] == self.qid and not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc):
        if not self.done.done():
            self.done.set_exception(exc)

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("upstream socket closed"))


async def udp_exchange(wire, host, port, timeout):
    loop = asyncio.get_running_loop()
    # A socket of our own (a fresh source port per query), connected here: no getaddrinfo in the executor.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    transport, proto = await loop.create_datagram_endpoint(lambda: _UdpExchange(wire), sock=sock)
    try:
        return await asyncio.wait_for(proto.done, timeout)
    finally:
        transport.close()


async def read_frame(reader):
    size = struct.unpack("!H", await reader.readexactly(2))[0]
    return await reader.readexactly(size)


async def tcp_exchange(wire, host, port, timeout):
    async def go():
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
            while True:
                data = await read_frame(reader)
                if data[:2] == wire[:2]:
                    return data
        finally:
            writer.close()
    return await asyncio.wait_for(go(), timeout)


def chain_of(qname, response):
    """[names of the CNAME chain from qname], {name: [(address, ttl)]} of the answer section."""
    cnames, addresses = {}, {}
    for rrset in response.answer:
        owner = normal(rrset.name)
        if rrset.rdtype == dns.rdatatype.CNAME:
            cnames[owner] = normal(rrset[0].target)
        elif rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            addresses.setdefault(owner, []).extend((rd.address, rrset.ttl) for rd in rrset)
    chain, name = [qname], qname
    while name in cnames and cnames[name] not in chain and len(chain) < 32:
        name = cnames[name]
        chain.append(name)
    return chain, addresses.get(chain[-1], [])


class Forwarder(object):
    """The state of og-dns: settings, matcher, learner, live learned addresses, spool and metrics."""

    def __init__(self, config, learner, metrics, spool, clock=time.time):
        self.config = config
        self.learner = learner
        self.metrics = metrics
        self.spool = spool
        self.clock = clock
        self.policy = AddressPolicy(config.internal_networks)
        self.matcher = Matcher()
        self.domains_stamp = None
        # (entry, name) -> {address: expires}; address -> number of (entry, name) holding it
        self.live = {}
        self.address_users = {}
        # (address, port or None) -> when its kernel member times out: an add sets the member's timeout, so a
        # shorter answer (another name of the same address) must not cut a longer one short.
        self.kernel_expires = {}
        # Heaps of (expires, key...) so that the once-a-second expiry pops what is due instead of walking every
        # learned address on the event loop; an entry whose time has moved on since it was pushed is skipped.
        self._live_due = []
        self._kernel_due = []
        # (entry, name) -> the entry's ports when it was learned: what its kernel members are.
        self.key_ports = {}
        metrics.per_entry(self.entry_counts)
        self.reload_domains()

    # ---- domains ----------------------------------------------------------------------------------------------
    def reload_domains(self):
        path = self.config.domains_file
        if not path:
            return False
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self.domains_stamp:
            return False
        try:
            self.matcher = load_domains(path)
        except DomainsError as exc:
            LOG.error("%s; keeping the %d domains loaded before", exc, len(self.matcher))
            self.domains_stamp = stamp
            return False
        self.domains_stamp = stamp
        self.metrics.domains.set(len(self.matcher))
        LOG.info("loaded %d domains (revision %d) from %s", len(self.matcher), self.matcher.revision, path)
        return True

    # ---- expiry and caps --------------------------------------------------------------------------------------
    def expire(self, now=None):
        now = self.clock() if now is None else now
        due = self._live_due
        while due and due[0][0] <= now:
            expires, key, address = heapq.heappop(due)
            held = self.live.get(key)
            if held is None or held.get(address) != expires:
                continue       # refreshed (a later heap entry holds its new time), or undone
            del held[address]
            self.spool.forget(key + (address,))
            self._release(address)
            if not held:
                del self.live[key]
                self.key_ports.pop(key, None)
        due = self._kernel_due
        while due and due[0][0] <= now:
            expires, key = heapq.heappop(due)
            if self.kernel_expires.get(key) == expires:
                del self.kernel_expires[key]
        self.metrics.learned_addresses.set(len(self.address_users))

    def _release(self, address, expired=True):
        """One (entry, name) less holds address; the last one gone counts as expired unless `expired` is False."""
        self.address_users[address] -= 1
        if not self.address_users[address]:
            del self.address_users[address]
            if expired:
                self.metrics.expired.inc()

    def _hold(self, key, address, expires):
        self.live.setdefault(key, {})[address] = expires
        heapq.heappush(self._live_due, (expires, key, address))

    def admit(self, entry, name, address, expires, undo=None):
        """True if (entry, name, address) may be learned now (cap bookkeeping done), False when a cap is hit.

        undo, a list, gets what was changed, so that a failed kernel add can be taken back (unadmit)."""
        key = (entry, name)
        held = self.live.get(key)
        if held is not None and address in held:
            if expires > held[address]:
                if undo is not None:
                    undo.append((key, address, held[address], expires))
                self._hold(key, address, expires)
            return True
        if held is not None and len(held) >= self.config.name_cap:
            self.metrics.caps_hit.labels("name").inc()
            self.spool.note_cap(entry, name, "name")
            return False
        if address not in self.address_users and len(self.address_users) >= self.config.gateway_cap:
            self.metrics.caps_hit.labels("gateway").inc()
            self.spool.note_cap(entry, name, "gateway")
            return False
        if undo is not None:
            undo.append((key, address, None, expires))
        self._hold(key, address, expires)
        self.address_users[address] = self.address_users.get(address, 0) + 1
        return True

    def unadmit(self, undo):
        """Take back admit()'s changes (newest first): the kernel refused the add, so nothing is held."""
        for key, address, before, after in reversed(undo):
            held = self.live.get(key, {})
            if held.get(address) != after:
                continue       # another answer moved it on while the kernel was asked: that one holds it
            if before is not None:
                held[address] = before
                heapq.heappush(self._live_due, (before, key, address))
                continue
            del held[address]
            if not held:
                del self.live[key]
                self.key_ports.pop(key, None)
            self._release(address, expired=False)

    def entry_counts(self):
        """{entry id: distinct live addresses}, for the metrics thread: list() copies the dicts in one C call, so the
        event loop's changes in between never break the walk."""
        found = {}
        for (entry, _name), held in list(self.live.items()):
            found.setdefault(entry, set()).update(list(held))
        return {entry: len(addresses) for entry, addresses in found.items()}

    # ---- entries deleted or changed ----------------------------------------------------------------------------
    def stale_keys(self):
        """The (entry, name) held whose entry is gone from the domains file, has other ports now, or no longer
        matches the name."""
        stale = []
        for key in self.live:
            entry, name = key
            ports = self.key_ports.get(key, ())
            if not any(m[0] == entry and tuple(m[2] or ()) == ports for m in self.matcher.match(name)):
                stale.append(key)
        return stale

    async def withdraw(self):
        """Remove from the learn sets at once what only stale keys held (an entry deleted or narrowed must close
        its addresses now, not at the end of their timeouts); returns how many kernel members went."""
        stale = self.stale_keys()
        if not stale:
            return 0
        members = set()
        for key in stale:
            ports = self.key_ports.pop(key, ())
            for address in self.live.pop(key):
                self.spool.forget(key + (address,))
                self._release(address, expired=False)
                members.update((address, port) for port in (ports or (None,)))
        for key, held in self.live.items():
            ports = self.key_ports.get(key, ())
            members.difference_update((address, port) for address in held for port in (ports or (None,)))
        self.metrics.learned_addresses.set(len(self.address_users))
        if not members:
            return 0
        gone = sorted(members, key=lambda m: (m[0], m[1] or ""))
        try:
            await self.learner.delete(gone)
        except (LearnError, OSError) as exc:
            self.metrics.learn_errors.inc()
            LOG.error("removing %d learned members of deleted or changed entries failed: %s", len(gone), exc)
            return 0
        for member in gone:
            self.kernel_expires.pop(member, None)
        self.metrics.withdrawn.inc(len(gone))
        LOG.info("withdrew %d learned members of %d (entry, name) no longer allowed", len(gone), len(stale))
        return len(gone)

    # ---- one answer -------------------------------------------------------------------------------------------
    async def learn(self, qname, response, qmatches=None):
        """Add the matched answer's addresses to the learn sets; True if any name of the chain matched.

        qmatches: the matcher's answer for qname when the caller has it already."""
        chain, addresses = chain_of(qname, response)
        matches = [(m, qname) for m in (self.matcher.match(qname) if qmatches is None else qmatches)]
        for name in chain[1:]:
            matches.extend((m, name) for m in self.matcher.match(name))
        if not matches:
            return False
        now = self.clock()
        cfg = self.config
        items, notes, undo = {}, [], []
        for address, ttl in addresses:
            if ipaddress.ip_address(address).version == 6 and not cfg.ipv6:
                continue
            if self.policy.is_internal(address):
                self.metrics.refused_internal.inc()
                LOG.warning("%s answered the internal address %s: not learned", qname, address)
                continue
            timeout = min(max(ttl, cfg.min_ttl), cfg.max_ttl) + cfg.grace
            expires = now + timeout
            for (entry, _pattern, ports), name in matches:
                if not self.admit(entry, name, address, expires, undo):
                    continue
                self.key_ports[(entry, name)] = tuple(ports or ())
                for port in (ports or (None,)):
                    items[(address, port)] = max(items.get((address, port), 0), timeout)
                notes.append((entry, name, address, ports, ttl, expires))
        if items:
            # Recorded before the await: a concurrent answer of another name with a shorter TTL must see it.
            for key, timeout in items.items():
                items[key] = timeout = max(timeout, int(self.kernel_expires.get(key, 0) - now))
                if self.kernel_expires.get(key) != now + timeout:
                    self.kernel_expires[key] = now + timeout
                    heapq.heappush(self._kernel_due, (now + timeout, key))
            try:
                await self.learner.add([(a, p, t) for (a, p), t in items.items()])
            except (LearnError, OSError) as exc:
                self.metrics.learn_errors.inc()
                self.unadmit(undo)
                LOG.error("learning %s failed: %s", qname, exc)
            else:
                self.metrics.learned.inc(len(notes))
                for note in notes:
                    self.spool.note_learned(*note, now=now)
        self.metrics.learned_addresses.set(len(self.address_users))
        return True

    def clamp(self, response):
        """Cut the answer's TTLs to max_ttl (what the learn sets hold at most); True if any was cut."""
        cut = False
        for rrset in response.answer:
            if rrset.ttl > self.config.max_ttl:
                rrset.ttl = self.config.max_ttl
                cut = True
        return cut

    def reply(self, query, rcode):
        response = dns.message.make_response(query)
        response.set_rcode(rcode)
        return response

    async def handle(self, wire, transport):
        """The wire to send back to the client (None: drop)."""
        start = time.perf_counter()
        self.metrics.queries.labels(transport).inc()
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if len(query.question) != 1:
            return self.finish(self.reply(query, dns.rcode.FORMERR).to_wire(), dns.rcode.FORMERR, start, 0.0)
        qname = normal(query.question[0].name)
        qmatches = self.matcher.match(qname)
        listed = bool(qmatches)
        if not listed and self.config.unlisted == "refuse":
            self.count_unlisted(qname)
            return self.finish(self.reply(query, dns.rcode.REFUSED).to_wire(), dns.rcode.REFUSED, start, 0.0)
        upstream_time = 0.0
        answer = None
        for host, port in self.config.upstreams:
            t0 = time.perf_counter()
            try:
                if transport == "tcp":
                    answer = await tcp_exchange(wire, host, port, self.config.upstream_timeout)
                else:
                    answer = await udp_exchange(wire, host, port, self.config.upstream_timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, struct.error) as exc:
                upstream_time += time.perf_counter() - t0
                self.metrics.upstream_errors.labels("%s:%d" % (host, port)).inc()
                LOG.warning("upstream %s:%d failed for %s: %s", host, port, qname, exc or type(exc).__name__)
                continue
            elapsed = time.perf_counter() - t0
            upstream_time += elapsed
            self.metrics.upstream_duration.observe(elapsed)
            break
        if answer is None:
            return self.finish(self.reply(query, dns.rcode.SERVFAIL).to_wire(), dns.rcode.SERVFAIL, start,
                               upstream_time)
        try:
            response = dns.message.from_wire(answer, ignore_trailing=True, raise_on_truncation=False)
        except dns.exception.DNSException as exc:
            LOG.warning("upstream answer for %s unreadable: %s", qname, exc)
            return self.finish(self.reply(query, dns.rcode.SERVFAIL).to_wire(), dns.rcode.SERVFAIL, start,
                               upstream_time)
        if await self.learn(qname, response, qmatches):
            if self.clamp(response):      # the upstream's bytes go out as they came unless a TTL was cut
                answer = response.to_wire(max_size=65535)
        elif not listed:
            self.count_unlisted(qname)
        if response.answer and self.spool.directory:
            # Run by the event loop once this task yields, which is after the caller has sent the answer.
            asyncio.get_running_loop().call_soon(self.note_answers, qname, response)
        return self.finish(answer, response.rcode(), start, upstream_time)

    def note_answers(self, qname, response):
        """Spool which addresses answered qname (listed or not): the server names a refused destination by them."""
        dummy, addresses = chain_of(qname, response)
        self.spool.note_answer(qname, [address for address, _ttl in addresses], self.clock())

    def count_unlisted(self, qname):
        self.metrics.unlisted.inc()
        self.spool.note_unlisted(qname, self.clock())

    def finish(self, wire, rcode, start, upstream_time):
        self.metrics.responses.labels(dns.rcode.to_text(rcode)).inc()
        self.metrics.added_latency.observe(max(0.0, time.perf_counter() - start - upstream_time))
        return wire


class UdpServer(asyncio.DatagramProtocol):
    def __init__(self, forwarder):
        self.forwarder = forwarder
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        asyncio.ensure_future(self.answer(data, addr))

    async def answer(self, data, addr):
        try:
            wire = await self.forwarder.handle(data, "udp")
        except Exception:  # one bad query never stops the listener
            LOG.exception("query from %s failed", addr)
            return
        if wire is not None:
            self.transport.sendto(wire, addr)


async def tcp_client(forwarder, reader, writer):
    try:
        while True:
            try:
                data = await asyncio.wait_for(read_frame(reader), 30)
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                return
            wire = await forwarder.handle(data, "tcp")
            if wire is None:
                return
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
    except Exception:  # one bad client never stops the listener
        LOG.exception("TCP client failed")
    finally:
        writer.close()


async def serve(forwarder, ready=None):
    """Listen on every configured address (UDP and TCP), tick once a second (expiry, domains, spool)."""
    loop = asyncio.get_running_loop()
    cfg = forwarder.config
    servers = []
    for address in cfg.listen:
        transport, dummy = await loop.create_datagram_endpoint(lambda: UdpServer(forwarder),
                                                               local_addr=(address, cfg.port))
        servers.append(transport)
        servers.append(await asyncio.start_server(lambda r, w: tcp_client(forwarder, r, w), address, cfg.port))
    if ready is not None:
        ready()
    try:
        while True:
            await asyncio.sleep(1.0)
            forwarder.expire()
            if forwarder.reload_domains():
                await forwarder.withdraw()
            try:
                forwarder.spool.flush()
            except OSError as exc:   # disk full or the like: kept in memory, tried again next second
                forwarder.metrics.spool_errors.inc()
                LOG.error("cannot write the spool in %s: %s", forwarder.config.spool_dir, exc)
    finally:
        for server in servers:
            server.close()
