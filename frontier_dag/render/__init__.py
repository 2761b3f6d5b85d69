"""Views: Graphviz diagrams, Chrome/Perfetto traces, plots."""
