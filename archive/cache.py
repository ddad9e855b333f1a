"""Redis cache with tenant-scoped keys: `dicomflow:{tenant}:{part}:{part}...`, each with a TTL."""

from __future__ import annotations

from redis.asyncio import Redis

from archive.identity.tenants import check_tenant


class Cache:
    def __init__(self, client: Redis, default_ttl: int, prefix: str = "dicomflow") -> None:
        self.client = client
        self.default_ttl = default_ttl
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, default_ttl: int) -> "Cache":
        return cls(Redis.from_url(url), default_ttl)

    def key(self, tenant: str, *parts: str) -> str:
        # UIDs hold no ':', and tenants are checked, so a key can never reach another tenant's space
        return ":".join([self.prefix, check_tenant(tenant), *parts])

    async def get(self, tenant: str, *parts: str) -> bytes | None:
        value = await self.client.get(self.key(tenant, *parts))
        assert not isinstance(value, str)  # the client does not decode responses: values are bytes
        return value

    async def set(self, tenant: str, *parts: str, value: bytes, ttl: int | None = None) -> None:
        await self.client.set(self.key(tenant, *parts), value, ex=ttl or self.default_ttl)

    async def delete(self, tenant: str, *parts: str) -> None:
        await self.client.delete(self.key(tenant, *parts))

    async def delete_prefix(self, tenant: str, *parts: str) -> int:
        """Drop every key under a prefix (a study's or series' entries)."""
        removed = 0
        async for key in self.client.scan_iter(match=self.key(tenant, *parts) + "*", count=500):
            removed += await self.client.delete(key)
        return removed

    async def ttl(self, tenant: str, *parts: str) -> int:
        return await self.client.ttl(self.key(tenant, *parts))

    async def close(self) -> None:
        await self.client.aclose()
