import sys

from structsearch.cli import main

sys.exit(main())
