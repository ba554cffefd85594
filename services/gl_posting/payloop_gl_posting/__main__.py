from payloop.runtime import main
from payloop_gl_posting.service import SERVICE

main(SERVICE)
