"""python -m streamer: the live streamer (see streamer.main)."""

import sys

from streamer.main import main

sys.exit(main())
