"""Bundled example models, apart from the library: the digits CNN `wsq compress` uses by default,
and all-MiniLM-L6-v2 (extra `hf`). The library never imports them; the CLI and benches do."""
