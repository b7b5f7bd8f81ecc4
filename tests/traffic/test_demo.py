"""The README's first command: ``kubelab demo`` brings up the default lab, shows the
traffic, and takes the lab down again."""

from kubelab.labctl import LabControl
from tests.traffic.conftest import lab_leftovers


def test_the_demo_shows_every_path_and_cleans_up():
    out = LabControl().kubelab('demo', timeout=300).stdout
    assert out.count('all answered') >= 4, out
    assert 'refused after' in out and 'timeout (not routed outside the cluster)' in out
    assert 'app says app-with-sidecar' in out
    assert out.count('(masqueraded as the node)') == 3
    assert 'the real client' in out and '(no web pod on this node: dropped)' in out
    lb = out[out.index('cloud load balancer -> NodeIP:NodePort'):]
    assert '30 new connections: all answered' in lb, lb
    assert lb.count('control-plane') + lb.count('worker-') >= 2, lb    # spread over nodes
    assert 'The lab is down.' in out
    assert lab_leftovers() == {'bridges': [], 'links': [], 'processes': []}
