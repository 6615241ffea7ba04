"""The numba kernels, apart from the code that calls them: ``general`` for the gate-level
engine, ``blocked`` for the cache-blocked butterflies on split (real, imaginary) arrays that
the fused ``qaoa``, ``vqe`` and ``vqe_real`` fast paths are made of. Numba's rules hold here
(positional arguments, nopython types); nothing here imports the rest of qiz."""
