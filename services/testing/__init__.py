"""The store conformance kit: the contract suites of the store protocols, to run against any
backend, the built-in ones (``tests/contract/``) and those of other packages
(``docs/plugins.md``).

Each suite is a class of pytest tests; a test module subclasses it and provides one fixture,
``store_uri``: the URI of a fresh, empty store of the backend under test (the URI's scheme
selects the backend by entry point, as in a deployment). Its data may be removed afterwards.
Every test that reopens a store opens the same URI again and expects the same data::

    import pytest
    from services.testing.message_store import MessageStoreContract

    @pytest.fixture
    def store_uri(tmp_path):
        return f"memory://{tmp_path.name}"

    class TestMemoryMessageStore(MessageStoreContract):
        pass

The suites are: :class:`~services.testing.queue_store.QueueStoreContract`,
:class:`~services.testing.catalog_store.CatalogStoreContract` and
:class:`~services.testing.topic_store.TopicStoreContract` (a queue store, which keeps the
pool catalog and the topics), :class:`~services.testing.message_store.MessageStoreContract` and
:class:`~services.testing.notifier_store.NotifierStoreContract`. They are async tests: run them
with pytest-asyncio in auto mode (``asyncio_mode = "auto"``) and one event loop for the session
(``asyncio_default_fixture_loop_scope = "session"``, ``asyncio_default_test_loop_scope =
"session"``). Each store is built with a settable clock (the ``clock`` fixture) so that TTLs
are tested without sleeping.
"""

import pytest

# Plain asserts in the suites report their values when they fail, as in a test module.
pytest.register_assert_rewrite(
    "services.testing.catalog_store",
    "services.testing.message_store",
    "services.testing.notifier_store",
    "services.testing.queue_store",
    "services.testing.topic_store",
)
