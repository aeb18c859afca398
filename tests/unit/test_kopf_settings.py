"""What Kopf is configured to do per watch event (`handlers.configure`)."""

from __future__ import annotations

import kopf

from modelreg import handlers


def test_no_change_handler_is_registered_so_no_diff_base_is_needed() -> None:
    """`handlers.NoDiffBase` keeps no diff base: right only while the operator
    registers no create/update/delete/resume/field handlers (which would diff
    against it) and no daemons or timers (whose idling it resets)."""
    registry = kopf.get_default_registry()
    assert handlers.on_version_event is not None  # the module's handlers are registered
    assert registry._watching.get_all_handlers()
    assert not registry._changing.get_all_handlers()
    assert not registry._spawning.get_all_handlers()


def test_kopf_builds_no_copy_of_each_object_it_is_sent() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    storage = settings.persistence.diffbase_storage
    assert isinstance(storage, handlers.NoDiffBase)
    body = kopf.Body({"metadata": {"name": "v"}, "spec": {"model": "m", "version": "1"}})
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None
