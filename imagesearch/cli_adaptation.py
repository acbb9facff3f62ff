"""`imagesearch adaptation`: a collection's query adaptation, learned from its feedback.

    imagesearch adaptation fit -c trips --enable --wait   (fit, switch on if it helps)
    imagesearch adaptation get -c trips
    imagesearch adaptation enable -c trips                (or disable)
    imagesearch adaptation reset -c trips                 (delete the map; feedback stays)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from google.protobuf.json_format import MessageToDict

from imagesearch.cli_output import emit
from imagesearch.client import SearchClient
from imagesearch.search.v1 import search_pb2 as pb


def add_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    adaptation = command("adaptation", "a collection's query adaptation learned from feedback")
    adaptation.add_argument("action", choices=["fit", "get", "enable", "disable", "reset"])
    adaptation.add_argument("-c", "--collection", required=True)
    adaptation.add_argument("--enable", action="store_true",
                            help="fit: switch the new map on if it measures better than none")
    adaptation.add_argument("--wait", action="store_true",
                            help="fit: wait for the fit to end (on one server, not a pool)")
    adaptation.add_argument("--wait-timeout", type=float, default=600.0, metavar="S")
    adaptation.set_defaults(run=cmd_adaptation)


def cmd_adaptation(args: argparse.Namespace, client: SearchClient) -> int:
    if args.action == "reset":
        client.reset_adaptation(args.collection)
        state = client.get_adaptation(args.collection)
    elif args.action in ("enable", "disable"):
        state = client.set_adaptation_enabled(args.collection, args.action == "enable")
    elif args.action == "fit":
        state = client.fit_adaptation(args.collection, args.enable)
        if args.wait:
            state = client.wait_for_fit(args.collection, args.wait_timeout)
    else:
        state = client.get_adaptation(args.collection)
    show(args, state)
    return 1 if state.fit_state == pb.FIT_STATE_FAILED and args.action == "fit" else 0


def show(args: argparse.Namespace, state: pb.Adaptation) -> None:
    held = (f"{state.held_out_precision_before:.2f} -> {state.held_out_precision_after:.2f} "
            f"({state.held_out_queries})" if state.version else "-")
    fit = pb.FitState.Name(state.fit_state).removeprefix("FIT_STATE_").lower()
    emit(args, MessageToDict(state, preserving_proto_field_name=True,
                             always_print_fields_with_no_presence=True),
         [(state.version, "on" if state.enabled else "off", state.queries_used,
           state.judgements_used, held, fit + (f": {state.fit_error}" if state.fit_error
                                               else ""))],
         ["version", "switch", "queries", "judgements", "held-out P@1", "fit"])
