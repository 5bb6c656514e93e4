"""``python -m bench.report --results DIR``: every report of a results folder, rebuilt from its store."""
import sys

from bench.report.publish import main

sys.exit(main())
