"""The encoder of the Ryu shell (controller/ofp_encode.py) writes a group's buckets once
per bucket (issue 20: the bucket of a pod behind 10,000 Services is the same in 10,000
groups). The bytes it sends must be the ones Ryu's own encoding of the same group gives,
for every kind of bucket the pipeline makes (plain DNAT, with a ct_mark, with a masked
ct_mark), and larger groups stay within one OpenFlow message."""

import pytest
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

import controller.ryu_app  # noqa: F401  (Ryu patched as the controller runs it: NAT's padding)
from controller.flows import Bucket, Ct, GroupSpec, Nat
from controller.ofp_encode import Batch, _action, _group_mod_bytes, _message
from controller.pipeline.tables import MAX_GROUP_BUCKETS


class Datapath:
    ofproto, ofproto_parser, id = ofp, parser, 1

    def set_xid(self, msg):
        msg.set_xid(7)


def _bytes(msg) -> bytes:
    msg.xid = 7
    msg.serialize()
    return bytes(msg.buf)


def _ryu_own(spec: GroupSpec) -> bytes:
    buckets = [parser.OFPBucket(weight=b.weight, actions=[_action(parser, ofp, a)
                                                         for a in b.actions])
               for b in spec.buckets]
    return _bytes(parser.OFPGroupMod(Datapath(), ofp.OFPGC_ADD, ofp.OFPGT_SELECT,
                                     spec.group_id, buckets))


def _bucket(i, mark=None, mask=None):
    return Bucket((Ct(zone=2, commit=True, table=70, nat=Nat(dst=f'192.168.2.{i}', port=8080),
                      mark=mark, mark_mask=mask),))


@pytest.mark.parametrize('mark,mask', [(None, None), (1, None), (1, 1)])
def test_group_bytes_equal_ryus_own_encoding(mark, mask):
    spec = GroupSpec(42, tuple(_bucket(i, mark, mask) for i in range(11)))
    assert _bytes(_message(Datapath(), 'add', 'group', spec)) == _ryu_own(spec)
    again = _bytes(_message(Datapath(), 'modify', 'group', spec))     # from the cache
    assert again[:2] == _ryu_own(spec)[:2] and len(again) == len(_ryu_own(spec))


@pytest.mark.parametrize('op', ['add', 'modify', 'delete'])
def test_group_messages_written_here_equal_ryus_own(op):
    spec = GroupSpec(0x7FFF0001, tuple(_bucket(i, 1, 1) for i in range(5)))
    command = {'add': ofp.OFPGC_ADD, 'modify': ofp.OFPGC_MODIFY,
               'delete': ofp.OFPGC_DELETE}[op]
    buckets = [] if op == 'delete' else [
        parser.OFPBucket(weight=b.weight, actions=[_action(parser, ofp, a)
                                                   for a in b.actions])
        for b in spec.buckets]
    ryu = _bytes(parser.OFPGroupMod(Datapath(), command, ofp.OFPGT_SELECT, spec.group_id,
                                    buckets))
    item = spec.group_id if op == 'delete' else spec
    assert _group_mod_bytes(Datapath(), op, item, 7) == ryu


def test_a_batch_sends_the_messages_in_order_in_few_writes():
    class Sending(Datapath):
        xid = 0

        def __init__(self):
            self.sent = []

        def set_xid(self, msg):
            self.xid += 1
            msg.set_xid(self.xid)

        def send(self, buf):
            self.sent.append(buf)
    dp = Sending()
    batch = Batch(dp)
    specs = [GroupSpec(i + 1, tuple(_bucket(j) for j in range(11))) for i in range(2000)]
    for spec in specs:
        batch.add('add', 'group', spec)
    batch.add('delete', 'flow', 0x1234)
    batch.flush()
    data = b''.join(dp.sent)
    assert 1 < len(dp.sent) < 10
    offset, seen = 0, []
    while offset < len(data):       # every message whole, in order, xids counting up
        _, kind, length, xid = __import__('struct').unpack_from('!BBHI', data, offset)
        seen.append((kind, xid))
        offset += length
    assert seen == [(ofp.OFPT_GROUP_MOD, i + 1) for i in range(2000)] + [
        (ofp.OFPT_FLOW_MOD, 2001)]


def test_the_largest_group_fits_one_message():
    spec = GroupSpec(9, tuple(_bucket(i % 250, 1, 1) for i in range(MAX_GROUP_BUCKETS)))
    assert len(_bytes(_message(Datapath(), 'add', 'group', spec))) < 65535


def test_a_flow_encoded_once_is_ryus_own_encoding_with_each_xid():
    """A flow's add message is encoded once (the node bridges share ServiceLB flows) and
    sent with each message's own transaction id: the bytes Ryu would write."""
    from controller.flows import Group, ToController, flow
    from controller.pipeline.tables import T
    from controller.ofp_encode import _flow_add_bytes, _with_xid
    specs = [flow(T['ServiceLB'], 200, {'eth_type': 0x800, 'ip_proto': 6,
                                        'ipv4_dst': '10.96.0.10', 'tcp_dst': 80},
                  (Group(7),), owner='service default/web/tcp/p80'),
             flow(T['ServiceLB'], 1, {'eth_type': 0x800, 'ipv4_dst': '10.96.0.10'},
                  (ToController(),), meter=1, owner='service default/web')]
    dp = Datapath()
    for spec in specs:
        for xid in (7, 0x12345678):
            msg = _message(dp, 'add', 'flow', spec)
            msg.xid = xid
            msg.serialize()
            assert _with_xid(_flow_add_bytes(dp, spec), xid) == bytes(msg.buf)
