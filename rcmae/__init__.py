"""rcmae: a research workbench for unsupervised anomalous machine-sound detection.

The engine behind the ``rcmae`` command and the Streamlit workbench. Modules are nouns
(``audio``, ``data``, ``features``, ``model``, ``losses``, ``train``, ``score``, ``metrics``,
``augment``, ``prompts``, ``baselines``, ``benchmark``, ``jobs``, ``viz``); see docs/DESIGN.md.
"""

__version__ = "0.1.0"
