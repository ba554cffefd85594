"""PSA connectors behind one interface (`base.PsaConnector`), chosen by a connection's `source`."""
from __future__ import annotations

import json
from typing import Any

from payloop.secrets import secret_box

from payloop_psa_ingest.connectors.autotask import AutotaskConnector, AutotaskCredentials
from payloop_psa_ingest.connectors.base import PsaConnector
from payloop_psa_ingest.connectors.connectwise import ConnectWiseConnector, ConnectWiseCredentials
from payloop_psa_ingest.connectors.halopsa import HaloConnector, HaloCredentials
from payloop_psa_ingest.connectors.superops import SuperOpsConnector, SuperOpsCredentials

CONNECTORS = {"connectwise": ConnectWiseConnector, "autotask": AutotaskConnector, "halopsa": HaloConnector,
              "superops": SuperOpsConnector}
CREDENTIAL_MODELS = {"connectwise": ConnectWiseCredentials, "autotask": AutotaskCredentials,
                     "halopsa": HaloCredentials, "superops": SuperOpsCredentials}


def open_connector(source: str, base_url: str, credentials_encrypted: str,
                   settings: dict[str, Any] | None = None) -> PsaConnector:
    """A connector with the connection's credentials decrypted in memory only."""
    try:
        factory = CONNECTORS[source]
    except KeyError:
        raise ValueError(f"no connector for PSA {source!r}") from None
    credentials = json.loads(secret_box().decrypt(credentials_encrypted))
    return factory(base_url, credentials, settings or {})
