"""Shared pytest configuration. Fixture plugins live in tests/support so scripts can reuse them."""

pytest_plugins = [
    "tests.support.azurefiles_fixture",
    "tests.support.azurite_fixture",
    "tests.support.daemon_fixture",
]
