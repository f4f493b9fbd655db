"""``python -m lekutils.bench NAME [args]``: alias of ``python -m lekutils bench NAME [args]``."""

import sys

from lekutils.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
