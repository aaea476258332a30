import sys

from alphakern.cli import main

sys.exit(main())
