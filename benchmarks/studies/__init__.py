"""One-off measurements behind a design choice; results in benchmarks/results/studies/."""
