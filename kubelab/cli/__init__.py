"""The ``kubelab`` command (kubelab/cli/main.py and the command modules beside it).

The console script is ``kubelab = kubelab.cli:main`` (setup.py), and environments
installed before the command became a package name the same, so this hands ``main`` on.
"""

from kubelab.cli.main import main

__all__ = ['main']
