import sys

from ucoder.cli import main

sys.exit(main())
