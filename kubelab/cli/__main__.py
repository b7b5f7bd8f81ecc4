"""``python -m kubelab.cli``: the ``kubelab`` command without the console script (what
kubelab/labctl.py runs)."""

import sys

from kubelab.cli.main import main

sys.exit(main())
