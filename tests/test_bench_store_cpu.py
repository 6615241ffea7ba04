"""bench/store.py sums the CPU per MB of the largest put and get over every process and sets
it beside one QMP link's sender and sink."""

from __future__ import annotations

from bench import store
from bench.harness import Figure


def cpu_figures() -> list[Figure]:
    link = "one QMP link, bulk (256 MiB)"
    return [
        Figure("beside the pool", link, 800.0, "MB/s"),
        Figure("beside the pool", f"{link}: CPU of the sender", 0.7, "ms/MB"),
        Figure("beside the pool", f"{link}: CPU of the sink (SHA-256 of it)", 0.9, "ms/MB"),
        Figure("pool", "put 256 MiB: the putting node", 2.5, "ms/MB"),
        Figure("pool", "put 256 MiB: its holders together", 2.6, "ms/MB"),
        Figure("pool", "get 256 MiB: the getting node", 1.9, "ms/MB"),
        Figure("pool", "get 256 MiB: its holders together", 1.0, "ms/MB"),
    ]


def test_the_summary_adds_every_process_of_a_transfer() -> None:
    assert store.cpu_summary(cpu_figures()) == (
        "CPU per MB of content, every process of the transfer together (ms/MB): put 5.10, "
        "get 2.90; one QMP link 1.60 (sender 0.70, sink 0.90)."
    )


def test_without_cpu_figures_there_is_no_summary() -> None:
    assert store.cpu_summary([f for f in cpu_figures() if f.unit != "ms/MB"]) == ""
    assert store.cpu_summary([f for f in cpu_figures() if "link" not in f.name]) == ""
