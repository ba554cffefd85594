from payloop.runtime import main
from payloop_tenants.service import SERVICE

main(SERVICE)
