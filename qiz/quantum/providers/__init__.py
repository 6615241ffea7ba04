"""Provider adapters: the same circuit sent to a vendor's SDK, tested offline against the SDK's
own local simulator or fake backend.

One module per provider, each importing its SDK at import time and refusing in one line
(:class:`ProviderMissing`, naming the extra to install) when it is absent; importing this
package loads no SDK::

    errors   ProviderError / ProviderMissing, the one-line refusals
    common   what every adapter needs: a measured circuit, its measurement map, counts as ours
    ibm      qiskit-ibm-runtime: SamplerV2 on a fake backend (offline) or the user's own backend
    braket   Amazon Braket: our OpenQASM 3 export on LocalSimulator (offline) or the user's device

The online paths stay thin: each takes the user's own backend or device object (made with their
credentials, by their SDK) and does nothing the SDK does not. docs/targets.md ("Providers")
has the table of what works offline, what needs credentials and what is not possible (IonQ,
Rigetti).
"""
