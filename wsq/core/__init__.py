"""Core: the method itself. pool (which weights share the codebook) -> binning (O(N) uniform bins)
-> compress / compressed (the packed model, wsq.Compressed, each tensor at its own width) -> merge (codebook entries merged under a tolerance)."""
