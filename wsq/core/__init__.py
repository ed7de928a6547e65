"""Core: the method itself. pool (which weights share the codebook) -> binning (O(N) uniform bins)
-> compress (the packed model, wsq.Compressed) -> merge (codebook entries merged under a tolerance)."""
