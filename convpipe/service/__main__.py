"""``python -m convpipe.service serve|submit|status|cancel|jobs|cluster ...``."""

import sys

from ..cli.service import main

sys.exit(main())
