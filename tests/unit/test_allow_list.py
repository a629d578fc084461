"""The allow-list keeps its verdicts on addresses, never a name's answer (rebinding)."""

from __future__ import annotations

import pytest

from apitwin.webhooks.safety import AllowList, TargetRefused

pytestmark = pytest.mark.anyio


async def test_verdicts_repeat_and_names_are_resolved_on_every_check() -> None:
    answers = iter(["127.0.0.1", "10.0.0.1"])
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return [next(answers)]

    allow = AllowList(resolver=resolve)
    for _ in range(3):
        target = await allow.check("http://127.0.0.1:9/hook")
        assert target.address == "127.0.0.1" and str(target.dial_url) == "http://127.0.0.1:9/hook"
        with pytest.raises(TargetRefused, match="outside the allowed networks"):
            await allow.check("http://10.0.0.1/hook")
        with pytest.raises(TargetRefused, match="outside the allowed networks"):
            await allow.check("http://[::ffff:169.254.169.254]/")
        assert allow.allows("127.0.0.1") and not allow.allows("169.254.169.254")
    assert (await allow.check("http://partner.test/hook")).address == "127.0.0.1"
    # The same name now answers with an address outside the list: refused, not remembered.
    with pytest.raises(TargetRefused, match=r"10\.0\.0\.1"):
        await allow.check("http://partner.test/hook")
    assert asked == ["partner.test", "partner.test"]
