from payloop.runtime import main
from payloop_psa_ingest.service import SERVICE

main(SERVICE)
