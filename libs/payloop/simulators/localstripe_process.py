"""localstripe as a child process, kept in memory, with a charge's refunds found by index.

localstripe pickles its whole store to /tmp/localstripe.pickle after every write, and every
localstripe on the machine shares that file, so each request costs more than the last (tens of
milliseconds by a few thousand objects) and runs on one machine slow each other down. Tests and
the benchmark start from scratch and never read the copy back: they run it without one.

It also finds a charge's refunds by scanning its whole store, and does so several times for every
charge it answers (`refunds`, `amount_refunded`, `refunded`): py-spy put 96% of its CPU there by
about 4,500 charges, and its answers slowed as the store grew. `run()` keeps the refunds of each
charge as they are made; the lists it answers are the same.

`payloop dev` keeps its Stripe objects across restarts, beside its databases: `run(store)` keeps
them in that dev root's own file, written whole to a temporary file and renamed, so a stop in the
middle of a write never leaves a file the next start cannot read. localstripe's own file is one for
the whole machine, shared by every run; with it, back-to-back starts of `payloop dev` sometimes saw
localstripe exit at start.
"""
from __future__ import annotations

import os
import pickle
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

    load = resources.Store.try_load_from_disk

    def try_load_from_disk(self):
        load(self)
        by_charge.clear()  # refunds read back from the file were not made through __init__
        for kept in self.values():
            if isinstance(kept, Refund):
                by_charge[kept.charge].append(kept)

    Refund.__init__ = __init__
    Refund._api_list_all = classmethod(_api_list_all)
    resources.Store.try_load_from_disk = try_load_from_disk


def _keep_store_in(resources, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")

    def try_load_from_disk(self):
        try:
            with path.open("rb") as file:
                kept = pickle.load(file)
        except FileNotFoundError:
            return
        self.clear()
        self.update(kept)

    def dump_to_disk(self):
        with partial.open("wb") as file:
            pickle.dump(self, file, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(partial, path)

    resources.Store.try_load_from_disk = try_load_from_disk
    resources.Store.dump_to_disk = dump_to_disk


def run(store: str | None = None) -> None:
    """localstripe's server (its own command line) with the refund index: in memory, or kept in the
    file `store`."""
    from localstripe import resources, server

    if store is None:
        resources.Store.dump_to_disk = lambda self: None
    else:
        _keep_store_in(resources, Path(store))
    _index_refunds_by_charge(resources)
    server.start()


def localstripe_command(port: int, store: Path | None = None) -> list[str]:
    """The command line of `run`: a fresh store in memory, or the objects kept in the file `store`."""
    if store is None:
        return [sys.executable, "-c", "from payloop.simulators.localstripe_process import run; run()",
                "--port", str(port), "--from-scratch"]
    return [sys.executable, "-c", f"from payloop.simulators.localstripe_process import run; run({str(store)!r})",
            "--port", str(port)]


def start_localstripe(port: int, cwd: Path, *, store: Path | None = None, log: IO | int = subprocess.DEVNULL,
                      timeout_s: float = 20.0) -> subprocess.Popen:
    """A localstripe on `port` (see `localstripe_command`), answering when this returns."""
    cwd.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(localstripe_command(port, store), cwd=cwd, stdout=log,
                               stderr=subprocess.STDOUT if log is not subprocess.DEVNULL else log)
    try:
        wait_for_port("127.0.0.1", port, timeout_s, process, "localstripe")
    except (RuntimeError, TimeoutError):
        process.terminate()
        raise
    return process
