"""What torchrun runs in each worker when LLaMA-Factory re-launches ``train`` distributed.

``swift-ext lf train`` points ``llamafactory.launcher.__file__`` here before LLaMA-Factory
builds its torchrun command line (``torchrun ... {launcher.__file__} {args}``), so every
worker registers the parity templates before it parses its arguments. The options arrive
in ``SWIFT_EXT_LF_OPTIONS``, inherited from the launching process.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    from swift_ext.llamafactory import register

    register()
    from llamafactory.train.tuner import run_exp

    run_exp()


if __name__ == "__main__":
    # Run as a file, Python put this package's folder first on sys.path, where its module
    # names could shadow top-level ones; put the folder holding swift_ext there instead.
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == here:
        sys.path[0] = os.path.dirname(os.path.dirname(here))
    main()
