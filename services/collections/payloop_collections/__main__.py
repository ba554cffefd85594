from payloop.runtime import main
from payloop_collections.service import SERVICE

main(SERVICE)
