"""``python -m daskml_scale.cli``: the ``daskml-scale`` command."""

import sys

from . import main

sys.exit(main())
