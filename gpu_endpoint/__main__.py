"""`python -m gpu_endpoint`: run the model endpoint server (see `gpu_endpoint.server.main`)."""

import sys

from .server import main

sys.exit(main())
