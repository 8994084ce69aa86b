"""Settings derived per service: a name that is not a service fails instead of getting
another service's address or store."""

from __future__ import annotations

import pytest

from services.common.config import Service, Settings


def test_each_service_has_its_own_target_and_store() -> None:
    settings = Settings.load(environ={}, overrides={
        "queue_port": 1, "message_port": 2, "notifier_port": 3, "data_dir": "/srv/z",
    })
    assert [settings.target(s) for s in Service] == [
        "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"
    ]
    assert [settings.store_uri(s) for s in Service] == [
        "sqlite:////srv/z/queues.db", "sqlite:////srv/z/messages.db",
        "sqlite:////srv/z/notifier.db",
    ]
    # Plain names are the same services.
    assert settings.target("notifier") == settings.target(Service.NOTIFIER)


@pytest.mark.parametrize("name", ["gateway", "messages", "", "Queue"])
def test_an_unknown_service_name_fails(name: str) -> None:
    settings = Settings.load(environ={})
    with pytest.raises(ValueError, match="is not a valid Service"):
        settings.target(name)
    with pytest.raises(ValueError, match="is not a valid Service"):
        settings.store_uri(name)
