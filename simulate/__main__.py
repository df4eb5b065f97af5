"""`python -m simulate SCENARIO... | --all | --random N --seed S` (also `guardian simulate`)."""

import sys

from simulate.main import main

sys.exit(main())
