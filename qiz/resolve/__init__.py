"""Post-DNS resolution: a Kademlia DHT of signed, self-certifying records.

Sans-IO cores (:mod:`keyspace`, :mod:`routing`, :mod:`lookup`, :mod:`records`) run unchanged over
QMP links and inside :mod:`qiz.sim`.
"""
