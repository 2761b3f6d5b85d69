"""The built-in serving strategies, one DSL file each."""
