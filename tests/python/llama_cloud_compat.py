#!/usr/bin/env python3
"""Drive hookgate's saved webhook-config API with LlamaCloud's official Python client.

Usage: python3 tests/python/llama_cloud_compat.py <base_url> <api_key>

Needs the client at the version the SPEC takes as the schema source of truth:
    pip install llama-cloud==2.19.0

The client runs with strict response validation, so every answer must parse into the
client's own types (WebhookConfigResponse, the list, the v2 cursor page). Exit status: 0 when
every check passed, 1 when one failed (the failing assertion is printed), 2 when the client
package is missing or is another version.
"""

import datetime
import sys
import traceback
import uuid
import warnings

REQUIRED_VERSION = "2.19.0"
PIP_COMMAND = f"pip install llama-cloud=={REQUIRED_VERSION}"


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def run(base_url, api_key):
    import httpx
    import llama_cloud
    from llama_cloud import (
        AuthenticationError,
        DefaultHttpxClient,
        LlamaCloud,
        NotFoundError,
        UnprocessableEntityError,
    )
    from llama_cloud.pagination import SyncPaginatedCursor
    from llama_cloud.types import WebhookConfigResponse

    # Every response body the gateway sends, to search for the write-only secret afterwards.
    bodies = []

    def record(response: httpx.Response):
        response.read()
        bodies.append((f"{response.request.method} {response.request.url}", response.text))

    client = LlamaCloud(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        timeout=20.0,
        http_client=DefaultHttpxClient(event_hooks={"response": [record]}),
        _strict_response_validation=True,
    )
    configs = client.webhook_configs
    project = f"py-{uuid.uuid4().hex[:12]}"
    secret = f"py-secret-{uuid.uuid4().hex}"
    rotated = f"py-rotated-{uuid.uuid4().hex}"

    # A wrong key is refused with the client's own error type.
    intruder = LlamaCloud(api_key="not-the-key", base_url=base_url, max_retries=0)
    try:
        intruder.webhook_configs.list_paginated(project_id=project)
        raise AssertionError("a wrong API key was accepted")
    except AuthenticationError as error:
        check(error.status_code == 401, f"wrong key: {error.status_code}")
    print("ok: a wrong API key gets AuthenticationError (401)")

    # create
    created = configs.create(
        project_id=project,
        webhook_url="https://hooks.example.com/python/first",
        webhook_events=["parse.success", "extract.error"],
        webhook_headers={"X-Route": "py-1"},
        webhook_output_format="json",
        webhook_signing_secret=secret,
    )
    check(type(created) is WebhookConfigResponse, f"create returned {type(created)}")
    uuid.UUID(created.id)
    check(created.has_secret is True, f"has_secret: {created}")
    check(created.tenant_id == project, f"tenant_id: {created.tenant_id}")
    check(created.tenant_type == "project", f"tenant_type: {created.tenant_type}")
    check(created.webhook_url == "https://hooks.example.com/python/first", str(created))
    check(created.webhook_events == ["parse.success", "extract.error"], str(created))
    check(created.webhook_headers == {"X-Route": "py-1"}, str(created))
    check(created.webhook_output_format == "json", str(created))
    check(isinstance(created.created_at, datetime.datetime), str(created.created_at))
    check(created.created_at.tzinfo is not None, "created_at carries a time zone")
    age = datetime.datetime.now(datetime.timezone.utc) - created.created_at
    check(abs(age.total_seconds()) < 60, f"created_at is now: {created.created_at}")
    check(created.updated_at == created.created_at, str(created))
    check(not hasattr(created, "webhook_signing_secret"), "the secret came back")
    print(f"ok: create -> {created.id}")

    others = []
    for index in range(4):
        other = configs.create(
            project_id=project, webhook_url=f"https://hooks.example.com/python/{index}"
        )
        check(type(other) is WebhookConfigResponse, str(type(other)))
        check(other.has_secret is False, str(other))
        check(other.webhook_events is None, f"events default to all: {other}")
        check(other.webhook_headers == {}, str(other))
        check(other.webhook_output_format == "string", str(other))
        others.append(other)
    newest_first = [config.id for config in reversed(others)] + [created.id]
    print("ok: four more created")

    # v1 list (deprecated in the client, still served), newest first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        listed = configs.list(project_id=project)
    check(isinstance(listed, list), f"list returned {type(listed)}")
    check(all(type(item) is WebhookConfigResponse for item in listed), "list item types")
    check([item.id for item in listed] == newest_first, f"list order: {listed}")
    check(listed[-1] == created, "the listed config equals the created one")
    print("ok: list, newest first")

    # get
    fetched = configs.retrieve(created.id, project_id=project)
    check(type(fetched) is WebhookConfigResponse, str(type(fetched)))
    check(fetched == created, f"retrieve: {fetched} != {created}")
    try:
        configs.retrieve(created.id, project_id=f"{project}-other")
        raise AssertionError("another project read the configuration")
    except NotFoundError as error:
        check(error.status_code == 404, str(error))
    print("ok: retrieve, and 404 from another project")

    # update: partial, and a secret sent rotates it
    updated = configs.update(
        created.id,
        project_id=project,
        webhook_url="https://hooks.example.com/python/moved",
        webhook_headers={"X-Route": "py-2"},
    )
    check(type(updated) is WebhookConfigResponse, str(type(updated)))
    check(updated.id == created.id, str(updated))
    check(updated.webhook_url == "https://hooks.example.com/python/moved", str(updated))
    check(updated.webhook_headers == {"X-Route": "py-2"}, str(updated))
    check(updated.webhook_events == created.webhook_events, "events unchanged")
    check(updated.webhook_output_format == "json", "output format unchanged")
    check(updated.has_secret is True, "the secret stays set")
    check(updated.created_at == created.created_at, "created_at unchanged")
    check(updated.updated_at >= created.updated_at, "updated_at moves on")
    signed = configs.update(others[0].id, project_id=project, webhook_signing_secret=rotated)
    check(signed.has_secret is True, f"a secret sent sets has_secret: {signed}")
    check(signed.webhook_url == others[0].webhook_url, str(signed))
    check(configs.retrieve(created.id, project_id=project) == updated, "update stored")
    print("ok: update (partial; secret rotation flips has_secret)")

    # validation errors arrive as the client's 422 error with a detail naming the field
    try:
        configs.create(
            project_id=project,
            webhook_url="https://hooks.example.com/python/bad",
            webhook_events=[],
        )
        raise AssertionError("an empty webhook_events list was accepted")
    except UnprocessableEntityError as error:
        check(error.status_code == 422, str(error))
        check(str(error.body["detail"]).startswith("webhook_events"), f"detail: {error.body}")
    print("ok: invalid config -> UnprocessableEntityError naming webhook_events")

    # v2 cursor pages: page by page, then the client's own auto-pagination
    page = configs.list_paginated(project_id=project, page_size=2, include_total=True)
    check(isinstance(page, SyncPaginatedCursor), f"v2 returned {type(page)}")
    pages = []
    for current in page.iter_pages():
        check(len(current.items) <= 2, f"page size: {current.items}")
        check(
            all(type(item) is WebhookConfigResponse for item in current.items),
            "v2 item types",
        )
        total = (current.model_extra or {}).get("total_size")
        check(total == 5, f"total_size on every page: {total}")
        pages.append(current)
        check(len(pages) < 10, "pagination does not end")
    check(len(pages) == 3, f"5 configs in pages of 2 is 3 pages, got {len(pages)}")
    check(pages[0].next_page_token, "the first page has a next_page_token")
    check(pages[-1].next_page_token is None, "the last page has no next_page_token")
    paged = [item.id for current in pages for item in current.items]
    check(paged == newest_first, f"v2 walk: {paged} != {newest_first}")
    auto = [item.id for item in configs.list_paginated(project_id=project, page_size=3)]
    check(auto == newest_first, f"auto-pagination: {auto}")
    check(
        (configs.list_paginated(project_id=project).model_extra or {}).get("total_size")
        is None,
        "total_size only with include_total",
    )
    print("ok: v2 list pages with next_page_token; total_size with include_total")

    # delete
    check(configs.delete(created.id, project_id=project) is None, "delete returns None")
    for call in (
        lambda: configs.retrieve(created.id, project_id=project),
        lambda: configs.delete(created.id, project_id=project),
    ):
        try:
            call()
            raise AssertionError("the deleted config is still there")
        except NotFoundError as error:
            check(error.status_code == 404, str(error))
    for other in others:
        configs.delete(other.id, project_id=project)
    empty = configs.list_paginated(project_id=project, include_total=True)
    check(empty.items == [] and (empty.model_extra or {}).get("total_size") == 0, str(empty))
    check(empty.next_page_token is None, str(empty))
    print("ok: delete, then NotFoundError; the project is empty again")

    check(len(bodies) > 15, f"the response hook saw {len(bodies)} bodies")
    for label, text in bodies:
        for needle in (secret, rotated):
            check(needle not in text, f"{label} leaked the signing secret: {text}")
    print(f"ok: the signing secret is in none of {len(bodies)} responses")


def main(argv):
    if len(argv) != 3:
        print(__doc__)
        return 2
    try:
        import llama_cloud
    except ImportError as error:
        print(f"FAIL: the llama-cloud client is not installed ({error}); run: {PIP_COMMAND}")
        return 2
    if llama_cloud.__version__ != REQUIRED_VERSION:
        print(
            f"FAIL: llama-cloud {llama_cloud.__version__} is installed, the test needs "
            f"{REQUIRED_VERSION}; run: {PIP_COMMAND}"
        )
        return 2
    try:
        run(argv[1].rstrip("/"), argv[2])
    except Exception:
        traceback.print_exc(file=sys.stdout)
        return 1
    print("llama-cloud compatibility: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
