from payloop.runtime import main
from payloop_payments.service import SERVICE

main(SERVICE)
