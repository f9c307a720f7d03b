import sys

from cgraph.demo.plan import main

sys.exit(main())
