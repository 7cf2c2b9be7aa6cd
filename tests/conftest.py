"""Shared pytest configuration. Fixture plugins live in tests/support so scripts can reuse them."""

from hypothesis import settings

pytest_plugins = [
    "tests.support.azurefiles_fixture",
    "tests.support.azurite_fixture",
    "tests.support.daemon_fixture",
]

# No per-example time limit: these are properties of the code, not timings, and the shared
# 2-core machines run examples 2-3x slower under load (a 200 ms deadline failed at 265 ms).
settings.register_profile("dsmount", deadline=None)
settings.load_profile("dsmount")
