from payloop.runtime import main
from payloop_reporting.service import SERVICE

main(SERVICE)
