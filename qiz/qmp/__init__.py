"""QMP, the Quantum Mesh Protocol: mutually authenticated, post-quantum hybrid encrypted links.

Sans-IO cores (:mod:`frames`, :mod:`handshake`, :mod:`channel`, :mod:`connection`) are fed bytes
and time and return bytes and events; :mod:`transport` runs them over asyncio TCP, :mod:`rpc`
multiplexes requests over a link and :mod:`manager` keeps links alive. The wire format is
specified in ``docs/qmp.md``.
"""
