"""A discrete-event network simulator that drives QIZ's sans-IO routing and lookup code at
10,000+ nodes, with modelled latency, loss, churn and malicious nodes (:mod:`qiz.sim.network`),
and the job coordinator's decision core against a thousand workers that die, straggle, lie and
join (:mod:`qiz.sim.jobs`). Import the part you need: each pulls in only its own layers."""
