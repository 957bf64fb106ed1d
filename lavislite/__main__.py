import sys

from lavislite.cli import main

sys.exit(main())
