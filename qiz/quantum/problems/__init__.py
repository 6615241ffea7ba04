"""Problems as plain data, shared by the algorithms that solve them: QUBO/Ising models (with
their cost diagonals), DIMACS CNF formulas, graphs, and the mesh's own network problems
(placement, shortest paths) encoded as QUBOs."""
