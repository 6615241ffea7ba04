"""The node's local faces on 127.0.0.1: the HTTP API, the dashboard and Prometheus metrics."""
