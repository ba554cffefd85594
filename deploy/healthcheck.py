"""Container health probe: `python /app/healthcheck.py [/healthz|/readyz]`.

Asks this container's service (named by the image's SERVICE variable; its port comes from
libs/payloop/services.py, like `serve`'s default) and exits 0 on HTTP 200, 1 otherwise. Standard
library only: the slim image has no curl.
"""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from payloop.services import service


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/healthz"
    port = service(os.environ["SERVICE"]).port
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:  # HTTPError (e.g. 503 from /readyz) included
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
