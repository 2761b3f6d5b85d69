"""Analysis: critical paths, attribution and what-if, for one iteration and for a run."""
