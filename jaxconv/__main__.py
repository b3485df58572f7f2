import sys

from jaxconv._src.cli import main

sys.exit(main())
