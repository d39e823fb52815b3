"""``python -m swift_ext.ms_swift plugin-path``: print the ``--external_plugins`` file."""

import sys

from . import plugin_path

if __name__ == "__main__":
    if sys.argv[1:] in ([], ["plugin-path"]):
        print(plugin_path())
    else:
        sys.exit("usage: python -m swift_ext.ms_swift plugin-path")
