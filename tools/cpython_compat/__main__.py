import sys

from tools.cpython_compat.run import main

sys.exit(main())
