"""The pure helpers of the benchmarks: synthetic addresses and the extrapolation (no root, no namespaces).

Run by hand: .venv/bin/python -m pytest -p no:cacheprovider -q bench/test_benchlib.py
"""

import ipaddress
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import per_item_integral, synthetic_addresses, table  # noqa: E402
from og_kernel.og_netpolicy import DEFAULT_INTERNAL_NETWORKS, AddressPolicy  # noqa: E402


def test_synthetic_addresses_are_distinct_public_and_in_order():
    addresses = synthetic_addresses(100000)
    assert len(set(addresses)) == 100000
    assert addresses[:3] == ["11.0.0.0", "11.0.0.1", "11.0.0.2"]
    assert addresses[-1] == "11.1.134.159"
    policy = AddressPolicy(DEFAULT_INTERNAL_NETWORKS)
    assert [a for a in addresses[::997] if policy.is_internal(ipaddress.ip_network(a))] == []


def test_synthetic_addresses_continue_from_start_into_the_second_block():
    assert synthetic_addresses(3, start=(1 << 24) - 1) == ["11.255.255.255", "23.0.0.0", "23.0.0.1"]
    assert synthetic_addresses(2, start=5) == synthetic_addresses(7)[5:]


def test_synthetic_addresses_refuse_more_than_the_blocks_hold():
    with pytest.raises(ValueError, match="only 33554432 addresses"):
        synthetic_addresses(2, start=(2 << 24) - 1)


def test_integral_of_a_constant_cost_is_count_times_cost():
    assert per_item_integral([(0, 0.002), (100000, 0.002)]) == pytest.approx(200.0)


def test_integral_of_a_linear_cost_is_exact():
    # cost(s) = 0.001 + s * 1e-7 from 0 to 1000: 1000 * 0.001 + 1e-7 * 1000**2 / 2
    points = [(s, 0.001 + s * 1e-7) for s in (1000, 0, 500)]
    assert per_item_integral(points) == pytest.approx(1.05)


def test_integral_needs_two_samples():
    with pytest.raises(ValueError, match="at least two"):
        per_item_integral([(0, 1.0)])


def test_table_is_markdown_with_aligned_columns():
    assert table(["a", "bb"], [["ccc", 1]]) == "| a   | bb |\n|-----|----|\n| ccc | 1  |\n"
