"""Jobs across the mesh: signed specs, the worker pool, placement, replication and attestations.

Layering: ``spec``, ``execute``, ``results``, ``placement`` are pure (no I/O); ``pool`` owns the
worker processes; ``jobdb`` the SQLite state; ``worker`` and ``coordinator`` are the services a
:class:`~qiz.node.Node` wires onto its links.
"""
