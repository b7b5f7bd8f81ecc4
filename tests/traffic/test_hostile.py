"""Hostile packets, from a pod and from an external host (scapy, ``tests.tools.craft``):
forged sources are dropped at the switch port, INVALID packets are dropped rather than
forwarded un-NATed, and malformed headers, odd flags, SYN floods and ARP storms neither
crash nor wedge the controller or Open vSwitch, nor disturb another pod's traffic."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.traffic.manifests import echo_pod, shell_pods
from topo import ovs

APP = echo_pod('web-1', 'worker-1', 'web') + echo_pod('web-2', 'worker-2', 'web') + """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: udp, port: 53, targetPort: 8081, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  selector: {app: nothing-has-this-label}
  ports: [{port: 80, targetPort: 8080}]
""" + shell_pods(('attacker', 'worker-1'), ('bystander', 'worker-1'),
                   ('victim', 'worker-2'), ('load', 'control-plane'))

#: TCP flag combinations no connection may start with: dropped as INVALID, unanswered.
NEVER_ANSWERED = ('null', 'fin', 'xmas', 'syn-fin', 'syn-rst', 'syn-ack', 'rst', 'all')


class Hostile:
    """The shared lab, plus ``craft``: tests/tools/craft.py run in a lab host."""

    def __init__(self, lab):
        self.lab = lab

    def __getattr__(self, name):
        return getattr(self.lab, name)

    def craft(self, target: str, *args: str, namespace: str = 'default') -> dict:
        """Run ``tests.tools.craft`` (hand-made packets, scapy) in ``target``; its JSON."""
        env_path = os.pathsep.join(p for p in sys.path if p)
        proc = self.lab.run_in(target, ['env', f'PYTHONPATH={env_path}', self.lab.python,
                                        '-m', 'tests.tools.craft', *args],
                               namespace=namespace)
        if proc.returncode != 0:
            raise RuntimeError(f'craft {" ".join(args)} in {target} failed: {proc.stderr}')
        return json.loads(proc.stdout)


@pytest.fixture(scope='module')
def hostile(lab):
    lab.apply(APP)
    lab.client.wait_ready()
    return Hostile(lab)


def vswitchd_pid() -> int:
    with open(os.path.join(ovs.choose().rundir, 'ovs-vswitchd.pid')) as f:
        return int(f.read())


def invalid_drops(bridge: str) -> int:
    out = subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', '--names', 'dump-flows', bridge,
                          'table=ConntrackState'], capture_output=True, text=True,
                         check=True).stdout
    [line] = [ln for ln in out.splitlines() if '+inv' in ln]
    return int(re.search(r'n_packets=(\d+)', line).group(1))


def listen_udp(lab, target: str, port: int, seconds: float) -> subprocess.Popen:
    """A UDP listener in ``target`` that prints, as JSON, every (source, payload) it got."""
    script = ('import json,socket,time\n'
              's=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n'
              f's.bind(("0.0.0.0",{port}));s.settimeout(0.2)\n'
              f'got=[];end=time.time()+{seconds}\n'
              'while time.time()<end:\n'
              '  try:\n'
              '    d,a=s.recvfrom(2048);got.append([a[0],d.decode(errors="replace")])\n'
              '  except OSError:\n'
              '    pass\n'
              'print(json.dumps(got))\n')
    pid = lab.netns_pid(target)
    return subprocess.Popen(['nsenter', f'--net=/proc/{pid}/ns/net', '--', 'python3', '-c',
                             script], stdout=subprocess.PIPE, text=True)


def test_a_pod_cannot_send_from_another_pods_ip_or_mac(hostile):
    victim, bystander = hostile.pod_ip('victim'), hostile.pod_ip('bystander')
    other_mac = '0a:58:' + ':'.join(f'{int(o):02x}' for o in bystander.split('.'))
    listener = listen_udp(hostile, 'victim', 9999, seconds=3)
    time.sleep(0.5)
    attacker = hostile.pod_ip('attacker')
    sent = [hostile.craft('attacker', 'spoof', victim, '9999', '--src-ip', ip,
                          *(['--src-mac', mac] if mac else []), '--payload', payload)
            for ip, mac, payload in ((attacker, None, 'legit'),
                                     (bystander, None, 'forged-ip'),
                                     (attacker, other_mac, 'forged-mac'),
                                     (bystander, other_mac, 'forged-both'),
                                     ('10.96.0.1', None, 'forged-service-ip'))]
    got = json.loads(listener.communicate(timeout=10)[0])
    print(f'forged datagrams sent: {sum(s["sent"] for s in sent) - 1}; the victim got: {got}')
    assert all(s['sent'] for s in sent), sent
    assert got == [[attacker, 'legit']]


def test_crafted_packets_leave_the_controller_the_switches_and_other_pods_alone(hostile):
    vip, empty = hostile.cluster_ip('web'), hostile.cluster_ip('empty')
    node = hostile.client.lab()['nodes'][0]['ip']
    node_port = hostile.client.get('Service', 'default', 'web')['spec']['ports'][0]['nodePort']
    controller, vswitchd = hostile.client.lab()['controllerPid'], vswitchd_pid()
    drops_before = invalid_drops('kl-n2')
    load = hostile.background('load', 'stream', vip, 80, path='/hostname', interval=0.02)
    time.sleep(0.5)
    started = time.monotonic()

    pod = {'malformed': hostile.craft('attacker', 'malformed', vip, '--port', '80'),
           'flags': hostile.craft('attacker', 'flags', vip, '80'),
           'synflood': hostile.craft('attacker', 'synflood', vip, '80', '--count', '2000'),
           'reject flood': hostile.craft('attacker', 'synflood', empty, '80', '--count',
                                         '2000'),
           'arpstorm': hostile.craft('attacker', 'arpstorm', '--claim',
                                     hostile.pod_ip('victim'), '--count', '500')}
    outside = {'malformed': hostile.craft('host/client-1', 'malformed', node, '--port',
                                          str(node_port)),
               'flags': hostile.craft('host/client-1', 'flags', node, str(node_port)),
               'synflood': hostile.craft('host/client-1', 'synflood', node, str(node_port),
                                         '--count', '2000'),
               'arpstorm': hostile.craft('host/client-1', 'arpstorm', '--claim',
                                         '203.0.113.11', '--count', '500')}
    storm = time.monotonic() - started
    # The lab still changes, and fast: a new Service reaches every switch.
    hostile.apply("""
apiVersion: v1
kind: Service
metadata: {name: after-the-storm}
spec:
  selector: {app: web}
  ports: [{port: 8080, targetPort: 8080}]
""", wait=False)
    converge = hostile.client.wait_dataplane(timeout=10)
    [after] = hostile.http('attacker', hostile.cluster_ip('after-the-storm'), 8080,
                           '/hostname')
    result = load.stop()
    hostile.kubelab('delete', 'service', 'after-the-storm')

    flood, rejected = pod['synflood'], pod['reject flood']
    print(f'storm of {storm:.1f} s: {flood["sent"]} SYNs to the VIP '
          f'({flood["replies"]["syn_ack"]} SYN-ACKs), {rejected["sent"]} to a VIP without '
          f'endpoints ({rejected["replies"]["rst"]} RSTs, metered), '
          f'{pod["arpstorm"]["sent"]["request"]} ARP requests; '
          f'{invalid_drops("kl-n2") - drops_before} INVALID dropped on worker-1; '
          f'a new Service in the switches {converge:.2f} s later')
    print(f'load from another pod meanwhile: {result["sent"]} requests, {result["failed"]} '
          'failed')
    assert hostile.client.lab()['controllerPid'] == controller, 'the controller restarted'
    assert vswitchd_pid() == vswitchd, 'ovs-vswitchd restarted'
    assert result['failed'] == 0 and result['sent'] > 50
    assert after['ok'], after
    for origin in (pod, outside):
        for name in NEVER_ANSWERED:
            assert origin['flags']['cases'][name]['replies'] == [], (name, origin['flags'])
    assert invalid_drops('kl-n2') - drops_before >= len(NEVER_ANSWERED)
    assert flood['replies']['syn_ack'] >= 0.9 * flood['sent']
    assert outside['synflood']['replies']['syn_ack'] >= 0.9 * outside['synflood']['sent']
    # REJECT is built by the controller and metered at 200 packets/s.
    assert 0 < rejected['replies']['rst'] <= 200 * (rejected['seconds'] + 1) + 200
    for origin in (pod, outside):
        assert origin['arpstorm']['claim_replies'] == []
        assert set(origin['arpstorm']['macs']) <= {origin['arpstorm']['gateway_mac']}
