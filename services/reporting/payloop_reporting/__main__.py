import sys

from payloop.runtime import main
from payloop_reporting.service import SERVICE

# `rebuild` is reporting's own subcommand; everything else is the shared service entry point.
if sys.argv[1:2] == ["rebuild"]:
    from payloop_reporting.rebuild import cli

    cli(sys.argv[2:])
else:
    main(SERVICE)
