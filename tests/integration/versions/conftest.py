"""The redis-server of the Redis suite (one per session), for the cross-version tests."""

from tests.integration.redis.conftest import redis_server

__all__ = ["redis_server"]
