"""One exercise of the course: its number, folder, namespace, and the checks its
folder holds.

Each exercise lives in ``labs/NN-slug/``: README.md, ``start/`` and ``solution/``
manifests (and ``broken/``, a solution with one mistake, for the tests), and
``check.py``, its checks: the table ``TASKS`` of ``(task title, check function)`` and
the functions. ``labs/`` is no Python package and ``03-clusterip`` no module name, so
a check file is loaded by its path, once, when the exercise's tasks are first asked for.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

#: The course's folder: labs/ at the top of the repository.
LABS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'labs')
#: The label of what an exercise puts outside its own namespace ("NN").
LABEL = 'kubelab.io/lab'


@dataclass
class Exercise:
    number: int
    slug: str
    title: str
    summary: str
    cloud: str | None = None      # the lab it needs: 'none' (bare metal), else any

    @property
    def namespace(self) -> str:
        return f'lab-{self.number:02d}'

    @property
    def directory(self) -> str:
        return os.path.join(LABS_DIR, f'{self.number:02d}-{self.slug}')

    @property
    def tasks(self) -> list[tuple[str, Callable]]:
        """(task title, check function) in the order ``kubelab lab check`` runs them;
        a check takes a ``kubelab.course.ctx.Ctx``."""
        return load_checks(self.directory).TASKS


@functools.lru_cache(maxsize=None)
def load_checks(directory: str) -> ModuleType:
    """The module of ``directory``/check.py."""
    path = os.path.join(directory, 'check.py')
    name = 'kubelab_lab_' + os.path.basename(directory).replace('-', '_') + '_check'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
