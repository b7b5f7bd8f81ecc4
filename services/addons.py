"""The objects the lab installs itself: the ingress-nginx controller and the data plane
of each Gateway, as plain Kubernetes objects that go through the same store, scheduler,
kubelets and dataplane as the user's.

ingress-nginx (``addons.ingressNginx`` in the cluster file, on by default): the
namespace ``ingress-nginx``, the default IngressClass ``nginx`` (controller
``k8s.io/ingress-nginx``), a Deployment whose one pod runs on the chosen node with
hostPorts 80 and 443 (the node's address answers HTTP and HTTPS), and a Service of type
LoadBalancer in front of it (``externalTrafficPolicy: Local``, so the proxy sees the
client's address, as ingress-nginx's documentation recommends for a cloud LB).

Gateway API: the GatewayClass ``nginx`` (controller ``kubelab.io/gateway-controller``)
and, for every Gateway of that class, a Deployment ``<gateway>-nginx`` running the
Gateway's nginx and a LoadBalancer Service of the same name with one port per listener
port, both in the Gateway's namespace and owned by it (deleted with it). The Gateway's
address is that Service's load balancer address: what NGINX Gateway Fabric and Envoy
Gateway provision for each Gateway.

The proxies' nginx configuration is rendered by the lab (``services.l7.nginx_conf``) into
``$KUBELAB_STATE_DIR/l7/`` (``config_dir``); the emulated controller images run nginx on
it and reload it when it changes (``topo/images/nginx_proxy.py``).
"""

INGRESS_NAMESPACE = 'ingress-nginx'
INGRESS_NAME = 'ingress-nginx-controller'
INGRESS_CLASS = 'nginx'
INGRESS_CONTROLLER = 'k8s.io/ingress-nginx'
INGRESS_IMAGE = 'registry.k8s.io/ingress-nginx/controller:v1.11.3'
GATEWAY_CLASS = 'nginx'
GATEWAY_CONTROLLER = 'kubelab.io/gateway-controller'
GATEWAY_IMAGE = 'ghcr.io/nginx/nginx-gateway-fabric/nginx:1.4.0'
HEALTHZ_PORT = 10254           # ingress-nginx's /healthz (and the gateways')
#: Labels of the objects the lab manages for a Gateway (Gateway API's own label).
GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name'
MANAGED_BY = 'app.kubernetes.io/managed-by'
CONTROL_PLANE_TOLERATION = {'key': 'node-role.kubernetes.io/control-plane',
                            'operator': 'Exists', 'effect': 'NoSchedule'}


def config_dir(l7_dir: str, *, controller_class: str | None = None,
               gateway: tuple[str, str] | None = None) -> str:
    """Where the lab writes a proxy's nginx.conf: per ingress controller class, or per
    Gateway (namespace, name)."""
    import os
    if gateway is not None:
        return os.path.join(l7_dir, 'gateway', *gateway)
    return os.path.join(l7_dir, 'ingress', controller_class.replace('/', '_'))


def _proxy_container(image: str, args: list, ports: list) -> dict:
    return {
        'name': 'controller' if 'ingress' in image else 'nginx',
        'image': image, 'args': args,
        'ports': ports + [{'name': 'healthz', 'containerPort': HEALTHZ_PORT,
                           'protocol': 'TCP'}],
        'readinessProbe': {'httpGet': {'path': '/healthz', 'port': HEALTHZ_PORT},
                           'periodSeconds': 1, 'failureThreshold': 3},
    }


def ingress_nginx_objects(node: str) -> list[dict]:
    """The ingress-nginx install, its controller pinned to ``node``."""
    labels = {'app.kubernetes.io/name': 'ingress-nginx',
              'app.kubernetes.io/component': 'controller'}
    ports = [{'name': 'http', 'containerPort': 80, 'hostPort': 80, 'protocol': 'TCP'},
             {'name': 'https', 'containerPort': 443, 'hostPort': 443, 'protocol': 'TCP'}]
    container = _proxy_container(INGRESS_IMAGE, [
        f'--controller-class={INGRESS_CONTROLLER}', f'--ingress-class={INGRESS_CLASS}',
        f'--publish-service={INGRESS_NAMESPACE}/{INGRESS_NAME}'], ports)
    return [
        {'apiVersion': 'v1', 'kind': 'Namespace',
         'metadata': {'name': INGRESS_NAMESPACE, 'labels': {'app.kubernetes.io/name':
                                                            'ingress-nginx'}}},
        {'apiVersion': 'networking.k8s.io/v1', 'kind': 'IngressClass',
         'metadata': {'name': INGRESS_CLASS, 'labels': dict(labels),
                      'annotations': {'ingressclass.kubernetes.io/is-default-class':
                                      'true'}},
         'spec': {'controller': INGRESS_CONTROLLER}},
        {'apiVersion': 'apps/v1', 'kind': 'Deployment',
         'metadata': {'name': INGRESS_NAME, 'namespace': INGRESS_NAMESPACE,
                      'labels': dict(labels)},
         'spec': {'replicas': 1, 'selector': {'matchLabels': dict(labels)},
                  # hostPorts: a new pod cannot start beside the old one on the node.
                  'strategy': {'type': 'RollingUpdate',
                               'rollingUpdate': {'maxSurge': 0, 'maxUnavailable': 1}},
                  'template': {
                      'metadata': {'labels': dict(labels)},
                      'spec': {'nodeSelector': {'kubernetes.io/hostname': node},
                               'tolerations': [dict(CONTROL_PLANE_TOLERATION)],
                               'terminationGracePeriodSeconds': 30,
                               'containers': [container]}}}},
        {'apiVersion': 'v1', 'kind': 'Service',
         'metadata': {'name': INGRESS_NAME, 'namespace': INGRESS_NAMESPACE,
                      'labels': dict(labels)},
         'spec': {'type': 'LoadBalancer', 'externalTrafficPolicy': 'Local',
                  'selector': dict(labels),
                  'ports': [{'name': 'http', 'port': 80, 'targetPort': 'http',
                             'protocol': 'TCP'},
                            {'name': 'https', 'port': 443, 'targetPort': 'https',
                             'protocol': 'TCP'}]}},
    ]


def gateway_class_object() -> dict:
    return {'apiVersion': 'gateway.networking.k8s.io/v1', 'kind': 'GatewayClass',
            'metadata': {'name': GATEWAY_CLASS},
            'spec': {'controllerName': GATEWAY_CONTROLLER,
                     'description': 'kubelab: one nginx per Gateway behind a LoadBalancer'}}


def gateway_objects(gateway: dict) -> list[dict]:
    """The Deployment and LoadBalancer Service that carry ``gateway``'s listeners."""
    meta = gateway['metadata']
    name = f'{meta["name"]}-nginx'
    labels = {GATEWAY_NAME_LABEL: meta['name'], MANAGED_BY: 'kubelab-gateway'}
    owner = [{'apiVersion': 'gateway.networking.k8s.io/v1', 'kind': 'Gateway',
              'name': meta['name'], 'uid': meta.get('uid', ''), 'controller': True}]
    ports = sorted({(listener['port'], listener.get('protocol', 'HTTP'))
                    for listener in gateway['spec'].get('listeners') or []})
    container = _proxy_container(
        GATEWAY_IMAGE, [f'--gateway={meta["namespace"]}/{meta["name"]}'],
        [{'name': f'port-{port}', 'containerPort': port, 'protocol': 'TCP'}
         for port, _ in ports])
    return [
        {'apiVersion': 'apps/v1', 'kind': 'Deployment',
         'metadata': {'name': name, 'namespace': meta['namespace'], 'labels': dict(labels),
                      'ownerReferences': owner},
         'spec': {'replicas': 1, 'selector': {'matchLabels': dict(labels)},
                  'template': {'metadata': {'labels': dict(labels)},
                               'spec': {'terminationGracePeriodSeconds': 30,
                                        'containers': [container]}}}},
        {'apiVersion': 'v1', 'kind': 'Service',
         'metadata': {'name': name, 'namespace': meta['namespace'], 'labels': dict(labels),
                      'ownerReferences': owner},
         'spec': {'type': 'LoadBalancer', 'externalTrafficPolicy': 'Local',
                  'selector': dict(labels),
                  'ports': [{'name': f'{protocol.lower()}-{port}', 'port': port,
                             'targetPort': port, 'protocol': 'TCP'}
                            for port, protocol in ports]}},
    ]


# ---------------------------------------------------------------- cluster DNS
DNS_NAMESPACE = 'kube-system'
DNS_SERVICE = 'kube-dns'
DNS_DEPLOYMENT = 'coredns'
DNS_IMAGE = 'registry.k8s.io/coredns/coredns:v1.11.3'
DNS_READY_PORT = 8181          # CoreDNS's ready plugin
DNS_REPLICAS = 2


def dns_objects(cluster_ip: str, records_file: str) -> list[dict]:
    """kubeadm's cluster DNS: the Service ``kube-dns`` at the tenth address of the
    Service range (UDP and TCP 53) in front of a ``coredns`` Deployment of two pods,
    each serving the records the lab writes to ``records_file`` (services/dns.py)."""
    labels = {'k8s-app': 'kube-dns'}
    return [
        {'apiVersion': 'apps/v1', 'kind': 'Deployment',
         'metadata': {'name': DNS_DEPLOYMENT, 'namespace': DNS_NAMESPACE,
                      'labels': dict(labels)},
         'spec': {'replicas': DNS_REPLICAS, 'selector': {'matchLabels': dict(labels)},
                  'strategy': {'type': 'RollingUpdate',
                               'rollingUpdate': {'maxSurge': '25%', 'maxUnavailable': 1}},
                  'template': {
                      'metadata': {'labels': dict(labels)},
                      'spec': {
                          'tolerations': [dict(CONTROL_PLANE_TOLERATION)],
                          'terminationGracePeriodSeconds': 5,
                          'containers': [{
                              'name': 'coredns', 'image': DNS_IMAGE,
                              'args': ['--records', records_file],
                              'ports': [{'name': 'dns', 'containerPort': 53,
                                         'protocol': 'UDP'},
                                        {'name': 'dns-tcp', 'containerPort': 53,
                                         'protocol': 'TCP'}],
                              'readinessProbe': {
                                  'httpGet': {'path': '/ready', 'port': DNS_READY_PORT},
                                  'periodSeconds': 1}}]}}}},
        {'apiVersion': 'v1', 'kind': 'Service',
         'metadata': {'name': DNS_SERVICE, 'namespace': DNS_NAMESPACE,
                      'labels': dict(labels, **{'kubernetes.io/name': 'CoreDNS'})},
         'spec': {'clusterIP': cluster_ip, 'selector': dict(labels),
                  'ports': [{'name': 'dns', 'port': 53, 'targetPort': 53,
                             'protocol': 'UDP'},
                            {'name': 'dns-tcp', 'port': 53, 'targetPort': 53,
                             'protocol': 'TCP'}]}},
    ]
