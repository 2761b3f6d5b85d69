"""End-to-end validation against measured serving runs (``frontier-dag validate silicon``).

``silicon`` reads aiconfigurator-core's sample of measured runs into rows; ``models``
and ``engines`` say how a row's model and serving engine are represented; ``convert``
turns a row into a RunConfig (or says why it cannot); ``runner`` simulates rows over
processes; ``report`` computes the errors and their tables.
"""
