import sys

from fmnist_core.cli import main

sys.exit(main())
