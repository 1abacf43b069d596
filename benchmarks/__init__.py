"""stackpatch's benchmarks (issue 6): measured and reported, never part of `make test`."""
