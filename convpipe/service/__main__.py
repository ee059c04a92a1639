"""``python -m convpipe.service serve|submit|status|cancel|jobs|cluster ...``."""

import sys

from .cli import main

sys.exit(main())
