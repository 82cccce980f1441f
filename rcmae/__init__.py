"""rcmae: a research workbench for unsupervised anomalous machine-sound detection.

The engine behind the ``rcmae`` command and the Streamlit workbench, as packages by concern in layers
(docs/DESIGN.md): ``data`` < ``models`` / ``augment`` / ``views`` < ``run`` < ``training`` / ``scorers``
< ``evaluation`` / ``deploy`` < ``workbench`` < ``cli``. Module paths of rcmae 0.1 (``rcmae.scorers.detector``,
``rcmae.training``, ...) stay importable as aliases (``rcmae._legacy``).
"""

from rcmae import _legacy

__version__ = "0.2.0"

_legacy.install()
