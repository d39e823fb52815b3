"""The ms-swift plugin file: ``swift sft --external_plugins /path/to/swift_ext/plugin.py``.

ms-swift imports this file by path (``--external_plugins``, or ``external_plugins: [...]`` in a YAML config),
records the path in the checkpoint's ``args.json``, and re-imports it in ``swift infer``/``deploy`` and in
dataloader workers. Importing it registers every ``<family>_parity`` template (and ``hf_parity``), the
``<family>_parity`` agent templates and the data hook, and guards GRPO's importance-sampling correction
(``SWIFT_EXT_LOGPROB_GUARD``, see ``swift_ext.ms_swift``). It must stay importable as a plain file.
"""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
# ms-swift puts this file's directory first on sys.path; its modules (types.py, ...) would then shadow the
# standard library and other packages for every later import. Undo that.
while _here in sys.path:
    sys.path.remove(_here)

try:
    import swift_ext.ms_swift as _ms_swift
except ImportError:  # a source checkout that is not installed: import it from next to this file
    sys.path.append(os.path.dirname(_here))
    import swift_ext.ms_swift as _ms_swift

PARITY_TEMPLATES = _ms_swift.register()
