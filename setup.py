"""kubelab: an emulated Kubernetes network lab (Mininet + Open vSwitch + a Ryu kube-proxy)."""

from setuptools import find_packages, setup

setup(
    name='kubelab',
    version='0.1.0',
    description='An emulated Kubernetes network lab: pods, Services, kube-proxy as OpenFlow',
    python_requires='>=3.10',
    packages=find_packages(include=['kubelab', 'kubelab.*', 'services', 'services.*',
                                    'controller', 'controller.*', 'topo', 'topo.*']),
    install_requires=[],      # pinned in requirements.txt, installed by scripts/install.sh
    entry_points={'console_scripts': ['kubelab = kubelab.cli:main'],
                  # pytest's plugin registry: the kubelab fixtures (kubelab/pytest_plugin.py)
                  'pytest11': ['kubelab.pytest_plugin = kubelab.pytest_plugin']},
)
