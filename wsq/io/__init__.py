"""The file stage: wsq files, entropy-coded weight-sharing models in a safetensors container (the
format: wsq.container; a compressed model's bytes and exact size: wsq.compressed.layout).

header (a file's header, validated) -> reader (validated reads, load_state_dict, load) and writer
(atomic save); checkpoint reads a safetensors checkpoint one tensor at a time (wsq.from_checkpoint).
"""

from wsq.io.reader import load, load_state_dict
from wsq.io.writer import save

__all__ = ["save", "load", "load_state_dict"]
