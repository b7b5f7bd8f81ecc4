"""The cluster DNS server of image ``registry.k8s.io/coredns/coredns``, emulated.

Run in the ``coredns`` pods as ``python -m topo.images.coredns --records FILE [--port
53] [--bind 0.0.0.0]``. The records are computed by the lab (``services.dns.records``,
the control-plane half of CoreDNS's ``kubernetes`` plugin) and written to FILE on every
change; this program is the pod's half: it answers DNS queries from that file over UDP
and TCP, as CoreDNS with the Corefile kubeadm installs would::

    .:53 {
        errors
        health { lameduck 5s }      # here: --lameduck, default 0 (prompt SIGTERM)
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods verified                     # kubeadm's says insecure: see services.dns
            fallthrough in-addr.arpa ip6.arpa
        }
        forward . /etc/resolv.conf  # here: no upstream is reachable
        reload
        loadbalance
    }

Answers, for a query of class IN:

* a name in a zone of the file (the cluster domain and its reverse zones): the
  authoritative answer (flag AA). NOERROR with the records; NOERROR without records
  (NODATA) when the name exists but has no record of the type asked for (an AAAA
  query for a Service, a name between a record and its zone's apex); NXDOMAIN when
  the name does not exist. NODATA and NXDOMAIN carry the zone's SOA in the authority
  section (TTL 5: the records' TTL, also the SOA minimum, so negative answers are
  cached 5 s). A CNAME (ExternalName Service) is answered for any type and followed
  while its target is in the file. AXFR/IXFR: REFUSED (no transfer plugin).
* any other name: NXDOMAIN, not authoritative. CoreDNS hands such names to ``forward .
  /etc/resolv.conf``; the lab has no Internet, so the stand-in for the world's DNS says
  such a name does not exist. That is what a real cluster answers for the names users
  mistype most (``web`` asked from another namespace ends, after the search list, as
  ``web.``, which the root zone does not have), and glibc then says "not found" rather
  than "Temporary failure in name resolution", which SERVFAIL (CoreDNS with no reachable
  upstream) would make it say. Each is logged (``... no upstream``).
* before the file is first loaded: SERVFAIL, as CoreDNS answers before its kubernetes
  plugin has synced (``/ready`` says 503 meanwhile).
* class other than IN: REFUSED; opcode other than QUERY: NOTIMP; not exactly one
  question, or a message that does not parse: FORMERR; EDNS version above 0: BADVERS.

A UDP answer larger than the client can take (512 bytes without EDNS0, else the EDNS0
buffer size it advertised) is sent with no records and the TC flag, so that the
client asks again over TCP (``dig`` and glibc do). TCP carries messages with their
2-byte length prefix, several queries per connection, closed after ``--tcp-idle-timeout``
seconds idle (8, miekg/dns's default). Our EDNS0 answers advertise 1232 bytes. With
several A records, their order is shuffled in each answer (CoreDNS's loadbalance
plugin; ``--no-loadbalance`` keeps the file's order).

The pods' records (``services.dns.pod_records``) come from a second file beside the
first (``services.dns.pod_records_path``: ``records.pods.json``), which the lab
rewrites alone when only a pod's address changed: at 10,000 Services the records file
holds 24,000 names, which each server would read again for one pod. The two are served
as one (``services.dns.merged_node``: where both have a name, both files' types, the
records file's PTR first, as a headless Service's endpoint names an address before its
pod does), each zone's SOA serial from both files' generations. Without the second
file, the records file alone is served (it may hold the pods' records itself).

Both files are polled every 0.1 s (mtime, size and inode), so a change is served within
0.2 s, and only a file that changed is read again. A records file that is missing,
half-written or invalid is logged once and the records in force stay (the lab writes it
atomically by rename, but a reader must not trust that); likewise a pods' file that is
invalid, while one that is removed takes the pods' records with it. A new generation is
logged as one line; rewriting the same records logs nothing.

HTTP, as CoreDNS's plugins: ``GET /health`` on ``--health-port`` (8080) answers 200
``OK`` while the process runs; ``GET /ready`` on ``--ready-port`` (8181) answers 200
``OK`` once records are loaded, 503 naming ``kubernetes`` before. SIGTERM (or SIGINT):
after ``--lameduck`` seconds (default 0) of still answering, every socket is closed
and the process exits 0.

``--log`` logs every query in the format of CoreDNS's ``log`` plugin::

    [INFO] 10.244.1.3:52436 - 4242 "A IN web.default.svc.cluster.local. udp 58 false 512"
        NOERROR qr,aa,rd 106 0.000211s                       (one line)

The real image's flag ``-conf FILE`` is accepted and ignored (the records come from
``--records``), so a Deployment written for CoreDNS runs unchanged; ``-dns.port`` is
``--port``.
"""

import argparse
import asyncio
import copy
import hashlib
import json
import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from services.dns import FORMAT_VERSION, merged_node, pod_records_path
from topo.images import announce_started

#: Where the records are read from when neither --records nor $KUBELAB_DNS_RECORDS
#: says otherwise.
DEFAULT_RECORDS = '/run/kubelab/dns/records.json'
POLL_SECONDS = 0.1
TCP_IDLE_SECONDS = 8.0
#: The EDNS0 UDP payload size our answers advertise (DNS flag day 2020).
EDNS_PAYLOAD = 1232
#: A UDP answer's limit for a query without EDNS0 (RFC 1035).
CLASSIC_UDP_SIZE = 512
#: How many CNAMEs are followed in one answer.
MAX_CNAME_CHAIN = 8
VERSION = 'CoreDNS-1.11.3 (kubelab emulation)'


def log(message: str) -> None:
    print(message, flush=True)


class Records:
    """A records file (``services.dns.records``' format) ready to answer from.

    ``names`` maps each name, absolute and in lower case, to {rdtype: [rdata]}
    (``node`` looks a query's name up whatever its case); ``zones`` maps each zone
    apex likewise to its dns.name.Name. Raises ValueError naming what is wrong with
    ``data``.

    Parsing record data into dnspython's objects is the slow part of a load (some
    20 µs a record); ``previous`` is the Records in force, whose parsed data is
    reused, so that a reload costs what changed.
    """

    def __init__(self, data: dict, previous: 'Records | None' = None):
        known = previous.parsed if previous else {}
        self.parsed: dict = {}                 # (rdtype, text) -> rdata

        def parse(rdtype, text):
            key = (rdtype, text)
            rdata = known.get(key) or self.parsed.get(key) or \
                dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)
            self.parsed[key] = rdata
            return rdata

        try:
            self.generation = str(data['generation'])
            self.ttl = int(data['ttl'])
            self.zones = {_key(zone): dns.name.from_text(zone) for zone in data['zones']}
            self.names = {}
            for name, node in data['records'].items():
                rdsets = {}
                for type_text, texts in node.items():
                    rdtype = dns.rdatatype.from_text(type_text)
                    rdsets[rdtype] = [parse(rdtype, text) for text in texts]
                self.names[_key(name)] = rdsets
        except (KeyError, TypeError, ValueError, AttributeError,
                dns.exception.DNSException) as error:
            raise ValueError(f'{type(error).__name__}: {error}') from None
        for zone in self.zones:
            if dns.rdatatype.SOA not in self.names.get(zone, {}):
                raise ValueError(f'zone {zone} has no SOA record')

    @classmethod
    def load(cls, path: str, previous: 'Records | None' = None) -> 'Records':
        with open(path, encoding='utf-8') as f:
            try:
                data = json.load(f)
            except ValueError as error:
                raise ValueError(f'not JSON: {error}') from None
        if not isinstance(data, dict):
            raise ValueError('not a JSON object')
        if data.get('version') != FORMAT_VERSION:
            raise ValueError(f'format version {data.get("version")!r}, this server reads '
                             f'{FORMAT_VERSION}')
        return cls(data, previous)

    pods: 'Records | None' = None      # the pods' file's (``with_pods``)
    apexes: dict = {}                   # with it: each apex's node, SOA serial of both

    def with_pods(self, pods: 'Records | None') -> 'Records':
        """These records served together with those of the pods' file
        (``services.dns.pod_records``, beside the records file: a pod's new address
        rewrites it alone): every name of either, with both files' types
        (``services.dns.merged_node``), every zone of either, and each apex's SOA
        serial from both files' generations (it moves when either does, as CoreDNS's
        moves with any object it watches)."""
        out = copy.copy(self)
        out.pods, out.apexes = pods, {}
        if pods is None:
            return out
        out.generation = f'{self.generation}+{pods.generation}'
        out.zones = {**pods.zones, **self.zones}
        serial = int(hashlib.sha256(out.generation.encode()).hexdigest()[:8], 16)
        for key in out.zones:
            node = merged_node(self.names.get(key), pods.names.get(key))
            out.apexes[key] = {**node, dns.rdatatype.SOA: [
                soa.replace(serial=serial) for soa in node[dns.rdatatype.SOA]]}
        return out

    def node(self, name: dns.name.Name) -> dict | None:
        """``name``'s records by type ({} for a name without any), None when it does
        not exist."""
        key = name.to_text().lower()
        apex = self.apexes.get(key)
        if apex is not None:
            return apex
        return merged_node(self.names.get(key),
                           self.pods.names.get(key) if self.pods is not None else None)

    def zone_of(self, name: dns.name.Name) -> dns.name.Name | None:
        """The closest zone apex at or above ``name``, or None."""
        while True:
            apex = self.zones.get(name.to_text().lower())
            if apex is not None:
                return apex
            if name == dns.name.root or not name.labels:
                return None
            name = name.parent()


def _key(name: str) -> str:
    """A name of the file as ``Records`` keys it: lower case, absolute."""
    name = name.lower()
    return name if name.endswith('.') else name + '.'


def _rrset(name, ttl, rdtype, rdatas) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
    for rdata in rdatas:
        rrset.add(rdata, ttl)
    return rrset


def resolve(query: dns.message.Message, records: Records | None,
            shuffle: bool = True) -> tuple[dns.message.Message, str | None]:
    """The answer to ``query`` (parsed) from ``records``, and an error to log or None.
    The caller renders it within the transport's size (``render``)."""
    response = dns.message.make_response(query, our_payload=EDNS_PAYLOAD)
    if query.edns > 0:
        response.set_rcode(dns.rcode.BADVERS)
        return response, None
    if query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
        return response, None
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response, None
    question = query.question[0]
    if question.rdclass != dns.rdataclass.IN:
        response.set_rcode(dns.rcode.REFUSED)
        return response, None
    if records is None:
        response.set_rcode(dns.rcode.SERVFAIL)
        return response, (f'plugin/kubernetes: {question.name} '
                          f'{dns.rdatatype.to_text(question.rdtype)}: records not loaded yet')
    zone = records.zone_of(question.name)
    if zone is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response, (f'plugin/forward: {question.name} '
                          f'{dns.rdatatype.to_text(question.rdtype)}: no upstream (the lab '
                          f'has no Internet): NXDOMAIN')
    if question.rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
        response.set_rcode(dns.rcode.REFUSED)
        return response, None
    response.flags |= dns.flags.AA
    name, rdtype = question.name, question.rdtype
    negative = True                           # NXDOMAIN or NODATA: the SOA goes along
    for _ in range(MAX_CNAME_CHAIN):
        node = records.node(name)
        if node is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            break
        cname = node.get(dns.rdatatype.CNAME)
        if cname and rdtype not in (dns.rdatatype.CNAME, dns.rdatatype.ANY):
            response.answer.append(_rrset(name, records.ttl, dns.rdatatype.CNAME, cname))
            name = cname[0].target
            zone = records.zone_of(name)
            if zone is None:                  # outside: the client resolves the rest
                return response, None
            negative = False                  # a chain too long ends with its CNAMEs
            continue
        if rdtype == dns.rdatatype.ANY:
            found = sorted(node.items())
        else:
            found = [(rdtype, node[rdtype])] if rdtype in node else []
        for found_type, rdatas in found:
            rdatas = list(rdatas)
            if shuffle and found_type in (dns.rdatatype.A, dns.rdatatype.AAAA):
                random.shuffle(rdatas)
            response.answer.append(_rrset(name, records.ttl, found_type, rdatas))
        negative = not found
        break
    if negative:
        response.authority.append(_rrset(zone, records.ttl, dns.rdatatype.SOA,
                                         records.node(zone)[dns.rdatatype.SOA]))
    return response, None


def udp_limit(query: dns.message.Message) -> int:
    """The largest UDP answer the client takes: its EDNS0 size, else 512 bytes."""
    if query.edns >= 0:
        return max(CLASSIC_UDP_SIZE, min(query.payload, 65535))
    return CLASSIC_UDP_SIZE


def render(response: dns.message.Message, query: dns.message.Message,
           limit: int) -> bytes:
    """``response`` on the wire within ``limit`` bytes; when it does not fit, the same
    header and question with no records and the TC flag (the client retries over TCP)."""
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        truncated = dns.message.make_response(query, our_payload=EDNS_PAYLOAD)
        truncated.flags = response.flags | dns.flags.TC
        truncated.set_rcode(response.rcode())
        return truncated.to_wire(max_size=limit)


def formerr(wire: bytes) -> bytes | None:
    """A FORMERR answer to a message that does not parse, or None when even its header
    is unreadable or it is itself an answer (never answer an answer)."""
    if len(wire) < 12 or wire[2] & 0x80:
        return None
    response = dns.message.Message(id=int.from_bytes(wire[:2], 'big'))
    response.flags = dns.flags.QR | dns.opcode.to_flags(dns.opcode.from_flags(wire[2] << 8))
    response.set_rcode(dns.rcode.FORMERR)
    return response.to_wire()


def _flags_text(flags: int) -> str:
    names = (('qr', dns.flags.QR), ('aa', dns.flags.AA), ('tc', dns.flags.TC),
             ('rd', dns.flags.RD), ('ra', dns.flags.RA), ('ad', dns.flags.AD),
             ('cd', dns.flags.CD))
    return ','.join(name for name, bit in names if flags & bit)


class DnsServer:
    """The answering half: records in force, their reload, the UDP and TCP servers."""

    def __init__(self, path: str, log_queries: bool = False, shuffle: bool = True,
                 idle_timeout: float = TCP_IDLE_SECONDS):
        self.path = path
        self.pod_path = pod_records_path(path)
        self.log_queries = log_queries
        self.shuffle = shuffle
        self.idle_timeout = idle_timeout
        self.records: Records | None = None     # both files', as served
        self._files: dict = {path: None, self.pod_path: None}    # path -> its Records
        self._seen: dict = {}                   # path -> (mtime, size, inode) last seen

    # ------------------------------------------------------------------ records
    def reload(self) -> None:
        """Read the records file and the pods' file beside it if either changed since
        the last look; keep the records in force when one is missing or invalid
        (logged once per change; the pods' file may be absent: a records file may
        hold the pods' records itself)."""
        changed = [path for path in self._files if self._reload(path)]
        if changed and self._files[self.path] is not None:
            self.records = self._files[self.path].with_pods(self._files[self.pod_path])

    def _reload(self, path: str) -> bool:
        try:
            stat = os.stat(path)
            key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            key = None
        if key == self._seen.get(path, ()):
            return False
        self._seen[path] = key
        now = self._files[path]
        keeping = f'still serving generation {now.generation}' if now else 'not ready'
        if key is None:
            if path == self.path:
                log(f'[WARNING] plugin/kubernetes: records file {path} does not exist; '
                    f'{keeping}')
                return False
            self._files[path] = None
            return now is not None
        try:
            records = Records.load(path, now)
        except (OSError, ValueError) as error:
            log(f'[ERROR] plugin/kubernetes: records file {path} is not valid '
                f'({error}); {keeping}')
            return False
        if now is None or records.generation != now.generation:
            log(f'[INFO] plugin/reload: records generation {records.generation} loaded '
                f'from {path}: {len(records.names)} names in {len(records.zones)} zones')
        self._files[path] = records
        return True

    async def watch(self) -> None:
        while True:
            self.reload()
            await asyncio.sleep(POLL_SECONDS)

    # ------------------------------------------------------------------ queries
    def handle(self, wire: bytes, peer, transport: str) -> bytes | None:
        """The answer to one query off the wire, rendered for ``transport``."""
        started = time.monotonic()
        try:
            query = dns.message.from_wire(wire)
        except Exception:                     # any malformed input: FORMERR or silence
            return formerr(wire)
        if query.flags & dns.flags.QR:
            return None
        try:
            response, error = resolve(query, self.records, self.shuffle)
        except Exception as bug:              # answer anyway: a resolver must hear back
            response = dns.message.make_response(query, our_payload=EDNS_PAYLOAD)
            response.set_rcode(dns.rcode.SERVFAIL)
            error = f'plugin/errors: {query.question[0].name if query.question else "-"}: ' \
                    f'{type(bug).__name__}: {bug}'
        limit = udp_limit(query) if transport == 'udp' else 65535
        reply = render(response, query, limit)
        if error:
            log(f'[ERROR] {error}')
        if self.log_queries:
            self._log_query(query, len(wire), reply, peer, transport,
                            time.monotonic() - started)
        return reply

    def _log_query(self, query, size: int, reply: bytes, peer, transport: str,
                   seconds: float):
        question = query.question[0] if query.question else None
        flags = int.from_bytes(reply[2:4], 'big')
        do = bool(query.ednsflags & dns.flags.DO) if query.edns >= 0 else False
        what = (f'{dns.rdatatype.to_text(question.rdtype)} '
                f'{dns.rdataclass.to_text(question.rdclass)} {question.name}'
                if question is not None else '- - -')
        log(f'[INFO] {peer[0]}:{peer[1]} - {query.id} "{what} {transport} {size} '
            f'{str(do).lower()} {udp_limit(query)}" {dns.rcode.to_text(flags & 0xF)} '
            f'{_flags_text(flags)} {len(reply)} {seconds:.6f}s')

    async def serve_tcp(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        """Queries with their 2-byte length, one after another, until the client
        closes, sends garbage or stays idle ``idle_timeout`` seconds."""
        peer = writer.get_extra_info('peername') or ('-', 0)
        try:
            while True:
                size = int.from_bytes(await asyncio.wait_for(
                    reader.readexactly(2), self.idle_timeout), 'big')
                wire = await asyncio.wait_for(reader.readexactly(size), self.idle_timeout)
                reply = self.handle(wire, peer, 'tcp')
                if reply is None:
                    break
                writer.write(len(reply).to_bytes(2, 'big') + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer):
        self.server = server
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        reply = self.server.handle(data, addr, 'udp')
        if reply is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc):
        pass                                  # an ICMP error for an earlier answer


def http_server(bind: str, port: int, path: str, ready) -> ThreadingHTTPServer:
    """CoreDNS's health (``ready`` always true) or ready endpoint on ``port``: GET
    ``path`` answers 200 ``OK`` when ``ready()``, else 503 naming the plugin not
    ready; any other path 404."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split('?', 1)[0] != path:
                status, body = 404, b'404 page not found\n'
            elif ready():
                status, body = 200, b'OK'
            else:
                status, body = 503, b'kubernetes\n'
            self.send_response(status)
            self.send_header('Content-Type', 'text/plain; charset=utf-8')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            pass

    server = ThreadingHTTPServer((bind, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05},
                     daemon=True, name=f'http:{port}').start()
    return server


async def run(args) -> int:
    server = DnsServer(args.records, args.log, not args.no_loadbalance,
                       args.tcp_idle_timeout)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        udp, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(server), local_addr=(args.bind, args.port))
        tcp = await asyncio.start_server(server.serve_tcp, args.bind, args.port,
                                         reuse_address=True)
        https = [http_server(args.bind, port, path, ready) for port, path, ready in (
            (args.health_port, '/health', lambda: True),
            (args.ready_port, '/ready', lambda: server.records is not None)) if port]
    except OSError as error:
        log(f'[FATAL] listen {args.bind}:{args.port}: {error}')
        return 1
    log(f'.:{args.port} on {args.bind} (udp, tcp)')
    announce_started()
    log(VERSION)
    if args.conf:
        log(f'[INFO] -conf {args.conf} ignored: the records come from {args.records}')
    server.reload()
    watcher = asyncio.create_task(server.watch())
    await stop.wait()
    if args.lameduck > 0:
        log(f'[INFO] plugin/health: Going into lameduck mode for {args.lameduck:g}s')
        await asyncio.sleep(args.lameduck)
    watcher.cancel()
    udp.close()
    tcp.close()
    for http in https:
        http.shutdown()
        http.server_close()
    log('[INFO] SIGTERM: Shutting down servers then terminating')
    return 0


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='coredns', description=__doc__.split('\n')[0])
    parser.add_argument('--records', default=os.environ.get('KUBELAB_DNS_RECORDS',
                                                            DEFAULT_RECORDS),
                        help='the records file (services.dns.records, JSON)')
    parser.add_argument('--port', '-dns.port', type=int, default=53)
    parser.add_argument('--bind', default='0.0.0.0')
    parser.add_argument('--health-port', type=int, default=8080,
                        help='GET /health (0: none)')
    parser.add_argument('--ready-port', type=int, default=8181, help='GET /ready (0: none)')
    parser.add_argument('--log', action='store_true', help='log every query')
    parser.add_argument('--no-loadbalance', action='store_true',
                        help='keep the order of A records')
    parser.add_argument('--tcp-idle-timeout', type=float, default=TCP_IDLE_SECONDS)
    parser.add_argument('--lameduck', type=float, default=0.0,
                        help='seconds to keep answering after SIGTERM')
    parser.add_argument('-conf', dest='conf', help='CoreDNS\'s Corefile: ignored')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return asyncio.run(run(args))


if __name__ == '__main__':
    sys.exit(main())
