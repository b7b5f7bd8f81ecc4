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
