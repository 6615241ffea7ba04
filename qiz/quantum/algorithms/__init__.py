"""The algorithms, each with its fast path: QAOA, VQE and its ansatzes, Grover search, and
``solvers.solve`` that runs any QUBO exactly, by annealing, by QAOA or by VQE."""
