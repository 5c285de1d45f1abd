"""``etcdsync services list|watch``: the instances registered with service discovery.

::

    etcdsync services list prod                  # every instance of every service
    etcdsync services list prod api              # the instances of "api"
    etcdsync services watch prod api             # those, then each change

Each instance is printed as one line of JSON (name, id, address, port, addr,
payload, lease, registered_at, create_revision, mod_revision), in registration
order.  ``watch`` prints ``{"event": "added"|"updated"|"removed"|"reset",
"revision": R, "instance": {...}}`` lines: first an ``added`` line (``"initial":
true``) per live instance, then one per change, until interrupted.  Instances
registered through Go's ``naming/endpoints`` (``Addr``/``Metadata``) are listed too.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import Client, ServiceEvent, ServiceInstance, errors
from ._common import (
    EXIT_OK,
    EXIT_TIMEOUT,
    CliError,
    Interrupted,
    add_connection_options,
    emit,
    interrupts_raise,
    one_line,
    open_client,
)

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "services",
        help="list the registered instances of services (list), follow them (watch)",
        description="Service discovery: instances registered under NAMESPACE/NAME/ID.",
    )
    actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list",
        help="print the live instances, one JSON line each",
        description="Print the live instances of NAME (of every service without NAME), "
        "one JSON line each, in registration order.",
    )
    listing.add_argument("namespace", metavar="NAMESPACE", help="the services' key prefix")
    listing.add_argument("name", metavar="NAME", nargs="?", help="one service")
    add_connection_options(listing)
    listing.set_defaults(run=run_list, subparser=listing)
    watching = actions.add_parser(
        "watch",
        help="print the live instances of NAME, then each change, as JSON lines",
        description="Print an 'added' line per live instance of NAME, then one line per "
        "change (added, updated, removed; reset after a gap), until interrupted.",
    )
    watching.add_argument("namespace", metavar="NAMESPACE", help="the services' key prefix")
    watching.add_argument("name", metavar="NAME", help="the service")
    add_connection_options(watching)
    watching.set_defaults(run=run_watch, subparser=watching)
    sub.set_defaults(subparser=sub)


def _json(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)


def _instance(instance: ServiceInstance) -> str:
    return _json(instance.to_dict())


def _event(event: ServiceEvent) -> str:
    record: dict[str, Any] = {"event": event.type.value, "revision": event.revision}
    if event.instance is not None:
        record["instance"] = event.instance.to_dict()
    if event.initial:
        record["initial"] = True
    if event.resync:
        record["resync"] = True
    return _json(record)


def run_list(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        services = client.services(args.namespace)
        try:
            if args.name is None:
                found = services.all_instances(timeout=args.request_timeout)
            else:
                found = services.instances(args.name, timeout=args.request_timeout)
        except errors.Timeout as exc:
            raise CliError(one_line(exc), EXIT_TIMEOUT) from exc
        finally:
            services.close()
        for instance in found:
            emit(_instance(instance))
    return EXIT_OK


def _follow(client: Client, args: argparse.Namespace) -> None:
    services = client.services(args.namespace)
    try:
        with services.watch(args.name) as watch:
            for event in watch:
                emit(_event(event))
    finally:
        services.close()


def run_watch(args: argparse.Namespace) -> int:
    restore = interrupts_raise()
    try:
        with open_client(args) as client:
            _follow(client, args)
    except Interrupted:
        pass  # how watching normally ends
    finally:
        restore()
    return EXIT_OK
