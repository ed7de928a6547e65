"""Public name of the entropy coders: ``wsq.entropy`` IS ``wsq.io.entropy`` (the same module object).
The coders are part of the file stage, wsq/io/ (docs/architecture.md)."""

import sys

from wsq.io import entropy as _entropy

sys.modules[__name__] = _entropy
