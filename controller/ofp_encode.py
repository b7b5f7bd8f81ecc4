"""flows.py's values as OpenFlow 1.3 messages: what the Ryu shell puts on the wire.

The pipeline computes flows, groups and meters as plain values (controller/flows.py)
and reconcile says which to add, modify or delete (``Changes.steps``); this module turns
each step into the message a switch reads, and ``Batch`` writes a switch's messages in
large writes. It imports nothing from Ryu: Ryu's OpenFlow 1.3 ``parser`` and ``ofproto``
modules come in as arguments, or with the datapath (``dp.ofproto_parser``,
``dp.ofproto``), which the shell (controller/ryu_app.py, the only module that imports
Ryu) hands over; the shell also patches Ryu's Nicira NAT action, whose body Ryu 4.34
writes unpadded.

Most messages are Ryu's own objects (``_message``). The two that a large change sends by
the ten thousand are cached: a group's buckets are written here, each bucket encoded
once (the bucket that DNATs to a pod behind 10,000 Services is the same in 10,000
groups), and a flow's add message is encoded once per flow and sent with each message's
transaction id (the node bridges share ServiceLB flows). tests/unit/test_ryu_messages.py
holds these bytes against Ryu's own encoding.
"""

import functools
import struct

from controller import flows as F


# ---------------------------------------------------------------- spec -> Ryu's objects
def _action(parser, ofp, action):
    if isinstance(action, F.Output):
        port = ofp.OFPP_IN_PORT if action.port == 'in_port' else action.port
        return parser.OFPActionOutput(port)
    if isinstance(action, F.ToController):
        return parser.OFPActionOutput(ofp.OFPP_CONTROLLER, action.max_len)
    if isinstance(action, F.SetField):
        return parser.OFPActionSetField(**{action.field: action.value})
    if isinstance(action, F.Move):
        return parser.NXActionRegMove(src_field=action.src, dst_field=action.dst,
                                      n_bits=action.n_bits)
    if isinstance(action, F.Group):
        return parser.OFPActionGroup(action.group_id)
    if isinstance(action, F.Resubmit):
        return parser.NXActionResubmitTable(in_port=0xFFF8, table_id=action.table)  # IN_PORT (16 bit)
    if isinstance(action, F.LearnAffinity):
        l4 = f'{action.l4_field}_nxm'
        return parser.NXActionLearn(
            table_id=action.table, priority=F.LEARNED_PRIORITY, idle_timeout=action.timeout,
            cookie=action.cookie, specs=[
                parser.NXFlowSpecMatch(src=0x0800, dst=('eth_type_nxm', 0), n_bits=16),
                parser.NXFlowSpecMatch(src=action.proto, dst=('ip_proto_nxm', 0), n_bits=8),
                parser.NXFlowSpecMatch(src=('ipv4_src_nxm', 0), dst=('ipv4_src_nxm', 0),
                                       n_bits=32),
                parser.NXFlowSpecMatch(src=('reg7', 0), dst=('ipv4_dst_nxm', 0), n_bits=32),
                parser.NXFlowSpecMatch(src=('reg8', 0), dst=(l4, 0), n_bits=16),
                parser.NXFlowSpecLoad(src=('ipv4_dst_nxm', 0), dst=('reg3', 0), n_bits=32),
                parser.NXFlowSpecLoad(src=(l4, 0), dst=('reg4', 0), n_bits=16),
                parser.NXFlowSpecLoad(src=1, dst=('reg5', 0), n_bits=1)])
    if isinstance(action, F.Conjunction):       # clauses are 0-based on the wire
        return parser.NXActionConjunction(clause=action.clause - 1,
                                          n_clauses=action.n_clauses, id_=action.conj_id)
    if isinstance(action, F.Ct):
        nat = []
        if action.nat is not None:
            if action.nat.src is not None:
                nat = [parser.NXActionNAT(flags=1, range_ipv4_min=action.nat.src,   # SNAT
                                          range_ipv4_max=action.nat.src)]
            elif action.nat.dst is None:
                nat = [parser.NXActionNAT(flags=0)]
            else:
                kw = dict(range_ipv4_min=action.nat.dst, range_ipv4_max=action.nat.dst)
                if action.nat.port:
                    kw.update(range_proto_min=action.nat.port, range_proto_max=action.nat.port)
                nat = [parser.NXActionNAT(flags=2, **kw)]       # 2: DNAT
        if action.mark is not None and action.mark_mask is not None:
            # OpenFlow 1.3's set_field takes no mask: Nicira's reg_load2 does.
            nat.append(parser.NXActionRegLoad2(dst='ct_mark',
                                               value=(action.mark, action.mark_mask)))
        elif action.mark is not None:
            nat.append(parser.OFPActionSetField(ct_mark=action.mark))
        return parser.NXActionCT(
            flags=1 if action.commit else 0, zone_src=None, zone_ofs_nbits=action.zone,
            recirc_table=ofp.OFPTT_ALL if action.table is None else action.table,
            alg=0, actions=nat)
    raise TypeError(f'unknown action {action!r}')


def _instructions(parser, ofp, spec):
    inst = []
    if spec.meter is not None:
        inst.append(parser.OFPInstructionMeter(spec.meter, ofp.OFPIT_METER))
    if spec.actions:
        inst.append(parser.OFPInstructionActions(
            ofp.OFPIT_APPLY_ACTIONS, [_action(parser, ofp, a) for a in spec.actions]))
    if spec.goto is not None:
        inst.append(parser.OFPInstructionGotoTable(spec.goto))
    return inst


def _message(dp, op: str, kind: str, item):
    """The OpenFlow message of one reconcile step (``Changes.steps``)."""
    parser, ofp = dp.ofproto_parser, dp.ofproto
    if kind == 'meter':
        return parser.OFPMeterMod(
            dp, command=ofp.OFPMC_ADD if op == 'add' else ofp.OFPMC_MODIFY,
            flags=ofp.OFPMF_PKTPS | ofp.OFPMF_BURST, meter_id=item.meter_id,
            bands=[parser.OFPMeterBandDrop(rate=item.rate_pps, burst_size=item.burst)])
    if kind == 'group' and op == 'delete':
        return parser.OFPGroupMod(dp, ofp.OFPGC_DELETE, ofp.OFPGT_SELECT, item)
    if kind == 'group':
        buckets = [_EncodedBucket(_bucket_bytes(b, parser, ofp)) for b in item.buckets]
        return parser.OFPGroupMod(dp, ofp.OFPGC_ADD if op == 'add' else ofp.OFPGC_MODIFY,
                                  ofp.OFPGT_SELECT, item.group_id, buckets)
    if op == 'delete':                  # a flow, by cookie, in whichever table it is
        return parser.OFPFlowMod(
            dp, cookie=item, cookie_mask=0xFFFFFFFFFFFFFFFF, table_id=ofp.OFPTT_ALL,
            command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)
    return parser.OFPFlowMod(
        dp, cookie=item.cookie, table_id=item.table, priority=item.priority,
        command=ofp.OFPFC_ADD, match=parser.OFPMatch(**item.match_dict()),
        instructions=_instructions(parser, ofp, item))


# ---------------------------------------------------------------- encoded once
@functools.lru_cache(maxsize=65536)
def _bucket_bytes(bucket, parser, ofp) -> bytes:
    """A bucket on the wire, encoded once: the bucket that DNATs to a pod behind 10,000
    Services is the same in 10,000 groups (Ryu takes 0.16 ms to encode a group of 11
    buckets from its objects; a pod becoming ready there sends 10,000 per node)."""
    encoded = parser.OFPBucket(weight=bucket.weight, actions=[
        _action(parser, ofp, a) for a in bucket.actions])
    buf = bytearray()
    encoded.serialize(buf, 0)
    return bytes(buf).ljust(encoded.len, b'\0')


class _EncodedBucket:
    """What OFPGroupMod asks of a bucket: its length, and to write itself."""

    def __init__(self, data: bytes):
        self.data, self.len = data, len(data)

    def serialize(self, buf: bytearray, offset: int):
        if len(buf) < offset:
            buf += bytearray(offset - len(buf))
        buf[offset:offset + self.len] = self.data


def _group_mod_bytes(dp, op: str, item, xid: int) -> bytes:
    """A group's add, modify or delete (``item``: its GroupSpec, or its id to delete)
    as OpenFlow 1.3 bytes, written here: a pod behind 10,000 Services sends 10,000 per
    node, and Ryu's message objects cost more than the bytes (tests/unit/
    test_ryu_messages.py compares them with Ryu's own encoding)."""
    ofp = dp.ofproto
    if op == 'delete':
        command, gid, body = ofp.OFPGC_DELETE, item, b''
    else:
        command = ofp.OFPGC_ADD if op == 'add' else ofp.OFPGC_MODIFY
        gid, body = item.group_id, _buckets_bytes(item.buckets, item.content,
                                                  dp.ofproto_parser, ofp)
    length = ofp.OFP_GROUP_MOD_SIZE + len(body)
    return struct.pack('!BBHIHBxI', ofp.OFP_VERSION, ofp.OFPT_GROUP_MOD, length, xid,
                       command, ofp.OFPGT_SELECT, gid) + body


_BODIES: dict = {}           # a bucket list's content hash -> its bytes (see below)


def _buckets_bytes(buckets: tuple, content: int, parser, ofp) -> bytes:
    """A group's bucket list on the wire, once per content (10,000 Services over the
    same pods have the same bucket list in 10,000 groups); forgotten by the thousand."""
    body = _BODIES.get(content)
    if body is None or len(body[0]) != len(buckets) or body[0] != buckets:
        if len(_BODIES) >= 4096:
            _BODIES.clear()
        body = _BODIES[content] = (buckets, b''.join(
            _bucket_bytes(b, parser, ofp) for b in buckets))
    return body[1]


_FLOW_ADDS: dict = {}         # a flow's cookie -> its flow_mod with xid 0


def _flow_add_bytes(dp, spec) -> bytes:
    """A flow's add message with xid 0, encoded by Ryu once per flow: the node bridges
    get the same ServiceLB flows (a flow is its content cookie: controller/flows.py),
    and Ryu takes about 0.04 ms a message."""
    data = _FLOW_ADDS.get(spec.cookie)
    if data is None:
        msg = _message(dp, 'add', 'flow', spec)
        msg.xid = 0
        msg.serialize()
        if len(_FLOW_ADDS) >= 65536:
            _FLOW_ADDS.clear()
        data = _FLOW_ADDS[spec.cookie] = bytes(msg.buf)
    return data


# ---------------------------------------------------------------- on the wire
def _with_xid(data: bytes, xid: int) -> bytes:
    """An OpenFlow message with its transaction id (bytes 4-7 of the header) set."""
    return data[:4] + struct.pack('!I', xid) + data[8:]


class Batch:
    """Messages to one switch, sent in large writes rather than one queue entry each
    (Ryu's send queue holds a few entries: 30,000 group messages were 30,000 waits)."""
    SIZE = 256 * 1024

    def __init__(self, dp):
        self.dp, self.parts, self.size = dp, [], 0

    def _next_xid(self) -> int:
        self.dp.xid = (self.dp.xid + 1) & self.dp.ofproto.MAX_XID
        return self.dp.xid

    def add(self, op: str, kind: str, item) -> None:
        if kind == 'group':
            data = _group_mod_bytes(self.dp, op, item, self._next_xid())
        elif kind == 'flow' and op == 'add':
            data = _with_xid(_flow_add_bytes(self.dp, item), self._next_xid())
        else:
            msg = _message(self.dp, op, kind, item)
            self.dp.set_xid(msg)
            msg.serialize()
            data = bytes(msg.buf)
        self.parts.append(data)
        self.size += len(data)
        if self.size >= self.SIZE:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.dp.send(b''.join(self.parts))
            self.parts, self.size = [], 0

