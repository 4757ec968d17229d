"""``python -m helpers.book``: run the command line (:func:`helpers.book.cli.main`)."""

import sys

from helpers.book.cli import main

sys.exit(main())
