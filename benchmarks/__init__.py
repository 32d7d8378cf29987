"""asv benchmark suite for dasktrain (run with `make bench` or `asv run --python=same`)."""
