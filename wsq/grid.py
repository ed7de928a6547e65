"""Public name of the grid method: ``wsq.grid`` IS ``wsq.core.grid`` (the same module object). The
method lives with the other core stages in wsq/core/ (docs/architecture.md)."""

import sys

from wsq.core import grid as _grid

sys.modules[__name__] = _grid
