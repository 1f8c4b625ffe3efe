"""The scenario tier uses the fixtures it ships to users."""

from unbroken.scenarios.pytest_plugin import (  # noqa: F401
    answers,
    chaos_client,
    chaos_harness,
    chaos_proxy,
    network,
    run_scenario,
)
