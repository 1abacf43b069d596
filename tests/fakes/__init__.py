"""Local stand-ins that behave as documented third-party services do (no mocks of our own code)."""

from tests.fakes.cloudflare import FakeCloudflare, fake_cloudflare

__all__ = ["FakeCloudflare", "fake_cloudflare"]
