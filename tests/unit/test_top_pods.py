"""``kubelab top pods`` and ``kubelab get configmaps`` print what kubectl prints."""

from datetime import datetime, timezone

import pytest

from kubelab import printers
from kubelab.inspect import top
from services.errors import UsageError

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=timezone.utc)


def metrics(name, ns='default', **containers):
    return {'kind': 'PodMetrics', 'metadata': {'name': name, 'namespace': ns},
            'window': '10s', 'containers': [
                {'name': c, 'usage': {'cpu': cpu, 'memory': mem}}
                for c, (cpu, mem) in containers.items()]}


ITEMS = [metrics('web', app=('1500000n', '10240Ki'), logger=('100000n', '2048Ki')),
         metrics('coredns-1', 'kube-system', coredns=('99000000n', '20480Ki'))]


def test_top_pods_as_kubectl_prints_them():
    text = top.render_top_pods([i for i in ITEMS if i['metadata']['namespace'] == 'default'])
    assert text.splitlines() == ['NAME   CPU(cores)   MEMORY(bytes)', 'web    2m           12Mi']


def test_top_pods_all_namespaces_and_per_container():
    lines = top.render_top_pods(ITEMS, all_namespaces=True).splitlines()
    assert lines[0].split() == ['NAMESPACE', 'NAME', 'CPU(cores)', 'MEMORY(bytes)']
    assert lines[1].split() == ['default', 'web', '2m', '12Mi']
    assert lines[2].split() == ['kube-system', 'coredns-1', '99m', '20Mi']
    lines = top.render_top_pods(ITEMS[:1], containers=True).splitlines()
    assert [line.split() for line in lines] == [
        ['POD', 'NAME', 'CPU(cores)', 'MEMORY(bytes)'], ['web', 'app', '2m', '10Mi'],
        ['web', 'logger', '1m', '2Mi']]


def test_no_metrics_yet_is_said():
    with pytest.raises(UsageError, match='metrics not available yet'):
        top.render_top_pods([])


def test_get_configmaps_counts_keys_never_values():
    cm = {'kind': 'ConfigMap', 'metadata': {'name': 'app', 'namespace': 'default',
                                            'creationTimestamp': '2026-12-06T11:58:00Z'},
          'data': {'a': 'secret-ish'}, 'binaryData': {'b': 'AA=='}}
    text = printers.render('configmaps', [cm], None, NOW)
    assert text.splitlines() == ['NAME   DATA   AGE', 'app    2      2m']
    assert printers.kind_alias('cm') == 'configmaps'
    assert printers.render('configmaps', [cm], 'name', NOW) == 'configmap/app'
