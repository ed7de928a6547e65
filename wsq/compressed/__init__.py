"""The compressed model, the pivot of the pipeline: ``Compressed`` (model), how its parts are built
from a template (assemble), which parameters are one tensor (ties), and its bytes as a wsq file
with their exact size (layout). It imports only the layers (wsq.nn), the kernels, the entropy
coders and the container format; wsq.core builds it and wsq.io reads and writes it, and neither of
those imports the other.
"""

from wsq.compressed.model import Compressed, QuantizedParam

__all__ = ["Compressed", "QuantizedParam"]
