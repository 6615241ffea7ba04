"""QIZ: Quantum Infrastructure Zero.

A zero-infrastructure, post-quantum-secure peer-to-peer mesh whose nodes run
quantum-algorithm workloads for each other. See README.md for the tour.
"""

__version__ = "0.1.0"
