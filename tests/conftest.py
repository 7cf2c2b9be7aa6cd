"""Shared pytest configuration. Fixture plugins live in tests/support so scripts can reuse them."""

pytest_plugins = [
    "tests.support.azurite_fixture",
]
