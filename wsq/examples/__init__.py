"""Bundled example models, apart from the library: the digits CNN `wsq compress` uses by default,
all-MiniLM-L6-v2 and the byte-level LLaMA pylm (extra `hf`). The library never imports them; the
CLI and benches do.

Each example has decision data and disjoint held-out data (digits: validation and test splits;
minilm: two disjoint sentence sets; pylm: different stdlib files). Their `wsq compress` settings
use margin 0 (``--margin``): decisions keep the decision score at baseline - tolerance, and every
table shows the held-out figure beside it; pass a margin when the decision set is small."""
