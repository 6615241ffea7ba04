"""The deploy engine: signed, rollback-proof bundles published over the mesh (TUF metadata signed
with the node's post-quantum keys), installed atomically and run under supervision.

See docs/deploy.md for the formats and the threat model.
"""
