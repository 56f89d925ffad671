"""The bundle's Python components.

A bundle zip made by ``python scripts/pack_bundle.py`` carries a copy of the ``autolr_monai`` package next to this
file; importing ``scripts`` (the first step of ``inference`` in ``configs/inference.json``, once MONAI has put the
bundle folder on the import path) puts that copy first on the path, so the bundle runs where ``autolr_monai`` is not
installed. In the source tree no copy is here and the installed package is used.
"""

import sys
from pathlib import Path

_packed = Path(__file__).resolve().parent
if (_packed / "autolr_monai" / "__init__.py").is_file() and str(_packed) not in sys.path:
    sys.path.insert(0, str(_packed))
