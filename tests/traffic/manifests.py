"""Manifests the traffic tests share."""


def echo_pod(name: str, node: str, app: str = 'echo') -> str:
    """An agnhost netexec pod (HTTP 8080, UDP 8081) pinned to ``node``, as YAML."""
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {app}}}}}
spec:
  nodeName: {node}
  containers:
  - {{name: netexec, image: registry.k8s.io/e2e-test-images/agnhost:2.53,
     args: [netexec, --http-port=8080, --udp-port=8081],
     ports: [{{containerPort: 8080}}, {{containerPort: 8081, protocol: UDP}}]}}
---"""


def deployment_head(name: str, replicas: int) -> str:
    """A Deployment's YAML up to its containers' list: ``replicas`` pods labelled
    ``app: NAME``."""
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
"""


def netexec_deployment(name: str = 'web', replicas: int = 2, udp: bool = True) -> str:
    """A Deployment of agnhost netexec pods (HTTP 8080, UDP 8081 unless ``udp`` is
    false) labelled ``app: NAME``, as YAML followed by ``---``."""
    udp_flag = '8081' if udp else '-1'
    return f"""
{deployment_head(name, replicas)}      - {{name: netexec, image: registry.k8s.io/e2e-test-images/agnhost:2.53,
         args: [netexec, --http-port=8080, --udp-port={udp_flag}]}}
---"""


def shell_pods(*placed: tuple[str, str]) -> str:
    """Idle busybox pods, one per (name, node), to send traffic from; they tolerate the
    control-plane taint. As YAML, each document preceded by ``---``."""
    return ''.join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  tolerations: [{{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}}]
  containers:
  - name: shell
    image: busybox:1.36
    command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 1; done']
""" for name, node in placed)


ECHO_BASIC = 'gcr.io/k8s-staging-gateway-api/echo-basic:v20240412-v1.0.0-394-g40c666fd'


def echo_backend(name: str, replicas: int = 1, port: int = 80) -> str:
    """A Deployment of Gateway API conformance's echo server (it answers every path with
    JSON naming its pod) and a ClusterIP Service of the same name on ``port``; as the
    conformance suite's infra-backend-v1.. are. As YAML, preceded by ``---``."""
    return f"""---
{deployment_head(name, replicas)}      - name: echo
        image: {ECHO_BASIC}
        ports: [{{containerPort: 3000}}]
        env:
        - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
        - {{name: NAMESPACE, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
        - {{name: SERVICE_NAME, value: {name}}}
        readinessProbe: {{httpGet: {{path: /, port: 3000}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: {port}, targetPort: 3000}}]
"""
