"""Core: the builders of the compressed model (wsq.compressed). pool (which weights share the
codebook) -> binning (O(N) uniform bins) -> streaming / compress (each tensor packed at its own
width, one at a time) -> merge (codebook entries merged under a tolerance); grid_quant / grid (per-
tensor steps on one shared grid, wsq.tune), tables (Lloyd tables), equalize. Nothing here imports
wsq.io: reading and writing files is io's, and wsq.from_checkpoint joins the two."""
