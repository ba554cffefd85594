import sys
from pathlib import Path

# The drill harness and its service live beside the tests and run as scripts, not as a package.
sys.path.insert(0, str(Path(__file__).parent))
