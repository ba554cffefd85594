"""localstripe as a child process, kept in memory, with a charge's refunds found by index.

localstripe pickles its whole store to /tmp/localstripe.pickle after every write, and every
localstripe on the machine shares that file, so each request costs more than the last (tens of
milliseconds by a few thousand objects) and runs on one machine slow each other down. Tests and
the benchmark start from scratch and never read the copy back: they run it without one.

It also finds a charge's refunds by scanning its whole store, and does so several times for every
charge it answers (`refunds`, `amount_refunded`, `refunded`): py-spy put 96% of its CPU there by
about 4,500 charges, and its answers slowed as the store grew. `run()` keeps the refunds of each
charge as they are made; the lists it answers are the same.
"""
from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import IO

from payloop.embedded import wait_for_port


def _index_refunds_by_charge(resources) -> None:
    Refund, Charge, PaymentIntent, List = (resources.Refund, resources.Charge, resources.PaymentIntent,
                                           resources.List)
    by_charge: dict[str, list] = defaultdict(list)
    create, list_all = Refund.__init__, Refund._api_list_all.__func__

    def __init__(self, *args, **kwargs):
        create(self, *args, **kwargs)  # raises before storing anything when the request is refused
        by_charge[self.charge].append(self)

    def _api_list_all(cls, url, charge=None, payment_intent=None, limit=None, starting_after=None):
        if (charge is None) == (payment_intent is None):  # all refunds, or a bad request: as localstripe does
            return list_all(cls, url, charge=charge, payment_intent=payment_intent, limit=limit,
                            starting_after=starting_after)
        if payment_intent is not None:
            if not (isinstance(payment_intent, str) and payment_intent.startswith("pi_")):
                raise resources.UserError(400, "Bad request")
            charge = PaymentIntent._api_retrieve(payment_intent).latest_charge.id
        elif not (isinstance(charge, str) and charge.startswith("ch_")):
            raise resources.UserError(400, "Bad request")
        Charge._api_retrieve(charge)  # 404 for an unknown charge
        listed = List(url, limit=limit, starting_after=starting_after)
        listed._list = sorted(by_charge.get(charge, ()), key=lambda refund: refund.date, reverse=True)
        return listed

    Refund.__init__ = __init__
    Refund._api_list_all = classmethod(_api_list_all)


def run() -> None:
    """localstripe's server (its own command line), in memory and with the refund index."""
    from localstripe import resources, server

    resources.Store.dump_to_disk = lambda self: None
    _index_refunds_by_charge(resources)
    server.start()


def start_localstripe(port: int, cwd: Path, *, log: IO | int = subprocess.DEVNULL,
                      timeout_s: float = 20.0) -> subprocess.Popen:
    """A fresh, in-memory localstripe on `port`, answering when this returns."""
    cwd.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, "-c", "from payloop.simulators.localstripe_process import run; run()",
                                "--port", str(port), "--from-scratch"],
                               cwd=cwd, stdout=log, stderr=subprocess.STDOUT if log is not subprocess.DEVNULL else log)
    try:
        wait_for_port("127.0.0.1", port, timeout_s, process, "localstripe")
    except (RuntimeError, TimeoutError):
        process.terminate()
        raise
    return process
