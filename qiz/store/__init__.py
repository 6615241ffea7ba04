"""The storage pool (``qiz-store/1``, docs/store.md): content addressed by the hash of a signed
manifest, chunked, erasure-coded k-of-n across n distinct holders, optionally sealed.

The package is layered so that everything a hostile peer's bytes reach first is pure and small:

* ``limits``: every bound of the format, in one place (docs/security.md lists them);
* ``merkle``: the RFC 6962 root over the chunk table;
* ``tree``: path rules, tree entries, scanning a path to put, unpacking a stream safely;
* ``manifest``: building (signing) and strictly parsing manifests; sizes and offsets of shares;
* ``erasure``: zfec k-of-n coding of one stored chunk;
* ``sealing``: per-chunk AES-256-GCM and HPKE X-Wing key wrapping for recipients;
* ``chunks``: the put side's two passes over the stream (hash, then stored chunks);
* ``holdings``/``holder``/``config``: a holder's storage engine and RPC handlers;
* ``transfer``/``repair``/``placement``/``service``: the owner's side, ``StoreService``.
"""
