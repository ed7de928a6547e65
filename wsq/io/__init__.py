"""The file stage: wsq files, entropy-coded weight-sharing models in a safetensors container.

format (the layout, its constants and the header's validation; the format is described there)
-> writer (layout of a compressed model, exact size, atomic save) and reader (validated reads,
load_state_dict, load) -> entropy (the Huffman and rANS index coders, public as wsq.entropy).
"""

from wsq.io.reader import load, load_state_dict
from wsq.io.writer import file_size, save, stream_bits

__all__ = ["save", "load", "load_state_dict", "file_size", "stream_bits"]
