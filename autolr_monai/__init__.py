"""autolr-monai: Berger et al., MIDL 2018 (AutoLR + isample, dual-path 3D ResNet) as MONAI components.

Subpackages: ``networks`` (imports nothing else from the project), ``data``, ``sampling``, ``inference``,
``autolr`` (learning-rate control), ``engines``, ``evaluation`` (Table 2).
"""

__version__ = "0.5.0"
