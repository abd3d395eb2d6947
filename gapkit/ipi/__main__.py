"""``python -m gapkit.ipi MODEL --structure init.xyz --unix NAME``: the i-PI driver.

The same as ``gapkit ipi ...`` (:mod:`gapkit.cli.ipi`), for job scripts that run a
module rather than the ``gapkit`` script.
"""

import sys

from gapkit.cli import main

sys.exit(main(["ipi", *sys.argv[1:]]))
