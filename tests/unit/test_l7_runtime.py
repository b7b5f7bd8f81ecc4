"""The pieces of the lab's Ingress and Gateway API that run in pods or write files:
the emulated images (echo-basic, the nginx proxies), the downward API, the add-on
objects and the configuration writer."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from services import addons, manifests
from kubelab.netprobe import request
from topo.l7files import write_config
from topo.images import nginx_proxy
from topo.images.runtime import container_argv, container_env

PY = '/usr/bin/python3'


def test_the_proxy_images_run_the_nginx_supervisor():
    ingress = {'name': 'c', 'image': addons.INGRESS_IMAGE,
               'args': ['--controller-class=k8s.io/ingress-nginx']}
    assert container_argv(ingress, PY) == [
        PY, '-m', 'topo.images.nginx_proxy', '/nginx-ingress-controller',
        '--controller-class=k8s.io/ingress-nginx']
    gateway = {'name': 'c', 'image': addons.GATEWAY_IMAGE, 'args': ['--gateway=shop/gw']}
    assert container_argv(gateway, PY)[3:] == ['/nginx-gateway', '--gateway=shop/gw']
    echo = {'name': 'c', 'image': 'gcr.io/k8s-staging-gateway-api/echo-basic:v1'}
    assert container_argv(echo, PY) == [PY, '-m', 'topo.images.echo_basic']


def test_each_proxy_finds_its_configuration_directory():
    assert nginx_proxy.config_dir(['/nginx-ingress-controller', '--ingress-class=nginx',
                                   '--controller-class=k8s.io/ingress-nginx'], '/l7') == \
        addons.config_dir('/l7', controller_class='k8s.io/ingress-nginx')
    assert nginx_proxy.config_dir(['/nginx-gateway', '--gateway=shop/gw'], '/l7') == \
        addons.config_dir('/l7', gateway=('shop', 'gw'))
    with pytest.raises(SystemExit, match='--gateway=NAMESPACE/NAME'):
        nginx_proxy.config_dir(['/nginx-gateway'], '/l7')


def test_the_downward_api_fills_field_refs():
    container = {'name': 'c', 'image': 'busybox', 'env': [
        {'name': 'POD_NAME', 'valueFrom': {'fieldRef': {'fieldPath': 'metadata.name'}}},
        {'name': 'NAMESPACE',
         'valueFrom': {'fieldRef': {'fieldPath': 'metadata.namespace'}}},
        {'name': 'WHERE', 'value': '$(POD_NAME).$(NAMESPACE)'}]}
    env = container_env(container, 'web-1', '/bb', {'metadata.name': 'web-1',
                                                    'metadata.namespace': 'shop'})
    assert (env['POD_NAME'], env['NAMESPACE'], env['WHERE']) == ('web-1', 'shop',
                                                                 'web-1.shop')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_echo_basic_describes_the_request_and_the_pod():
    port = free_port()
    env = dict(os.environ, HTTP_PORT=str(port), POD_NAME='echo-1', NAMESPACE='shop',
               PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, '-m', 'topo.images.echo_basic'], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                req = urllib.request.Request(f'http://127.0.0.1:{port}/a/b?x=1',
                                             headers={'x-custom': 'v', 'Host': 'foo.com'},
                                             method='PUT', data=b'body')
                got = json.load(urllib.request.urlopen(req, timeout=2))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        probe = request('127.0.0.1', port, '/p?q=1', 2, method='POST', host_header='h.io',
                        headers=['X-A: 1'])
    finally:
        proc.terminate()
        proc.wait(5)
    assert (got['path'], got['host'], got['method']) == ('/a/b?x=1', 'foo.com', 'PUT')
    assert probe['status'] == 200
    seen = json.loads(probe['body'])
    assert (seen['path'], seen['host'], seen['method'], seen['headers']['X-A']) == (
        '/p?q=1', 'h.io', 'POST', ['1'])
    assert (got['pod'], got['namespace']) == ('echo-1', 'shop')
    assert got['headers']['X-Custom'] == ['v']


def test_the_add_on_objects_are_valid_kubernetes_objects():
    gateway = {'apiVersion': 'gateway.networking.k8s.io/v1', 'kind': 'Gateway',
               'metadata': {'name': 'gw', 'namespace': 'shop', 'uid': 'u1'},
               'spec': {'gatewayClassName': 'nginx', 'listeners': [
                   {'name': 'http', 'port': 80, 'protocol': 'HTTP'},
                   {'name': 'alt', 'port': 8080, 'protocol': 'HTTP', 'hostname': 'a.com'},
                   {'name': 'alt2', 'port': 8080, 'protocol': 'HTTP', 'hostname': 'b.com'}]}}
    objects = addons.ingress_nginx_objects('worker-1') + [addons.gateway_class_object()] \
        + addons.gateway_objects(gateway)
    for obj in objects:
        manifests.validate(obj)               # raises with the field on a mistake
    deployment, service = addons.gateway_objects(gateway)
    assert [p['port'] for p in service['spec']['ports']] == [80, 8080]
    assert service['metadata']['ownerReferences'][0]['uid'] == 'u1'
    assert deployment['spec']['template']['spec']['containers'][0]['args'] == [
        '--gateway=shop/gw']


class Config:
    def __init__(self, text, files):
        self.text, self.files = text, files


def test_write_config_writes_what_changed_and_removes_what_went(tmp_path):
    d = str(tmp_path / 'cfg')
    assert write_config(d, Config('a', {'certs/x.pem': b'1'}))
    os.makedirs(os.path.join(d, 'pods', 'p1'))
    open(os.path.join(d, 'pods', 'p1', 'nginx.pid'), 'w').close()
    stamp = os.stat(os.path.join(d, 'nginx.conf')).st_mtime_ns
    assert not write_config(d, Config('a', {'certs/x.pem': b'1'}))
    assert os.stat(os.path.join(d, 'nginx.conf')).st_mtime_ns == stamp
    assert write_config(d, Config('b', {}))
    assert not os.path.exists(os.path.join(d, 'certs', 'x.pem'))
    assert open(os.path.join(d, 'nginx.conf')).read() == 'b'
    assert os.path.exists(os.path.join(d, 'pods', 'p1', 'nginx.pid'))   # the pods' own
