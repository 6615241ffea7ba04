"""Fuzz targets: one per parser a peer can reach (frames, handshake messages, the CBOR body of
every RPC method, records, job specs, OpenQASM, Pauli sums, graphs, CNF).

Each is a hypothesis property with a bounded budget (the ``fuzz`` profile) in ``make test``;
``make fuzz`` runs the same targets with the ``fuzz-long`` profile (``QIZ_FUZZ_PROFILE``).
Inputs are valid messages with mutations (bit flips, truncations, extensions, wrong types,
boundary integers, huge lengths, deep nesting), so the fuzzers get past the first check.
"""
