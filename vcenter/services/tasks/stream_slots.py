"""The per-user cap on open event/task streams, counted in Redis so that it holds whichever
API replica serves each stream.

A stream holds a slot: a member of the user's sorted set (messaging.contracts.feed_streams_key)
scored with the moment it expires. The stream renews it on each poll and removes it when it
ends; a replica that dies without removing its slots leaks them only until they expire
(``feed_stream_slot_ttl``). Taking a slot is one Lua script (drop expired slots, count, add),
so two replicas cannot both take the last one.
"""

from __future__ import annotations

from typing import Any

import redis as redis_errors

from vcenter.core.errors import RateLimited, Unavailable
from vcenter.core.ids import new_uuid
from vcenter.messaging.contracts import feed_streams_key

# Times are Redis's own clock (TIME), so replicas with skewed clocks agree on expiry.
# KEYS[1]: the set; ARGV: the slot's lifetime (s), the cap, the slot id, the key's lifetime (ms).
_NOW = "local t = redis.call('time') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000 "
_TAKE = (
    _NOW
    + """
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
if redis.call('zcard', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('zadd', KEYS[1], now + tonumber(ARGV[1]), ARGV[3])
redis.call('pexpire', KEYS[1], ARGV[4])
return 1
"""
)
_RENEW = (
    _NOW
    + """
redis.call('zadd', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[3])
redis.call('pexpire', KEYS[1], ARGV[4])
return 1
"""
)


class StreamSlot:
    def __init__(self, redis: Any, user_id: int, ttl: float):
        self.redis, self.key, self.ttl, self.id = redis, feed_streams_key(user_id), ttl, new_uuid()

    def _args(self, cap: int = 0) -> tuple[Any, ...]:
        return (1, self.key, self.ttl, cap, self.id, int(self.ttl * 1000) + 1000)

    def take(self, cap: int) -> None:
        """Hold a slot, or 429 STREAM_LIMIT when the user has ``cap`` streams open (503 when
        Redis does not answer: the cap cannot be kept without it)."""
        try:
            taken = self.redis.eval(_TAKE, *self._args(cap))
        except redis_errors.RedisError as exc:
            raise Unavailable(f"cannot count open streams: {exc}", code="UNAVAILABLE") from exc
        if not taken:
            raise RateLimited(
                f"at most {cap} event/task streams per user are open at once: close one, or wait for a dead one's slot to expire",
                code="STREAM_LIMIT",
                details={"limit": cap},
            )

    def renew(self) -> None:
        self.redis.eval(_RENEW, *self._args())

    def release(self) -> None:
        try:
            self.redis.zrem(self.key, self.id)
        except redis_errors.RedisError:  # Redis away: the slot expires by itself
            pass
