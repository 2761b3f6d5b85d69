"""GPU kernel profilers and the profiles we measured ourselves."""
