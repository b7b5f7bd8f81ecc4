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
