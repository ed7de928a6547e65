import sys

from wsq.cli.main import main

sys.exit(main())
