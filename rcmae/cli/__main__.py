"""`python -m rcmae.cli ...` is the `rcmae` command."""

import sys

from rcmae.cli import main

sys.exit(main())
