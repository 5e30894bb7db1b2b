"""`python -m model_server`: run the model endpoint server (see `model_server.server.main`)."""

import sys

from .server import main

sys.exit(main())
