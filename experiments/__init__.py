"""absl-flag launchers for the studies, and benchmarks. Run from the repository root: python -m experiments.<name>."""
