"""What every part of the quantum processor builds on: circuits, gates and parameters as plain
data, Pauli-sum observables, the general state-vector engine with its sampler and primitives,
its memory and thread limits, its errors and its input-file reader."""
