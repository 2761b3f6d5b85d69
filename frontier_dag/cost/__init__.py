"""Cost models: what each operation of an iteration costs, in microseconds."""
