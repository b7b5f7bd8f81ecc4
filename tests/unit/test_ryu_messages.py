"""The Ryu shell encodes a group's buckets once per bucket (issue 20: the bucket of a pod
behind 10,000 Services is the same in 10,000 groups). The bytes it sends must be the
ones Ryu's own encoding of the same group gives, for every kind of bucket the pipeline
makes (plain DNAT, with a ct_mark, with a masked ct_mark), and larger groups stay
within one OpenFlow message."""

import pytest
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from controller.flows import Bucket, Ct, GroupSpec, Nat
from controller.pipeline.tables import MAX_GROUP_BUCKETS
from controller.ryu_app import _action, _message


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


def test_the_largest_group_fits_one_message():
    spec = GroupSpec(9, tuple(_bucket(i % 250, 1, 1) for i in range(MAX_GROUP_BUCKETS)))
    assert len(_bytes(_message(Datapath(), 'add', 'group', spec))) < 65535
