"""Optional bridges to other quantum SDKs, each imported only when its SDK is installed.

``qiz.integrations.qiskit``: Qiskit's primitives V2 (``BaseSamplerV2``, ``BaseEstimatorV2``)
running on the mesh or on this machine's engine. Importing this package loads no SDK.
"""
