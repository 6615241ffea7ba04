"""A discrete-event network simulator that drives QIZ's sans-IO routing and lookup code at
10,000+ nodes, with modelled latency, loss, churn and malicious nodes."""
