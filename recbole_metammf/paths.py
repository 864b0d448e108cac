"""Where the plugin's YAML defaults live, in a source checkout and once installed."""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))

# Installed: setup.py places the repository's properties/ inside the package.
# Source checkout: properties/ sits beside the package.
PROPERTIES_DIR = next(
    path
    for path in (os.path.join(_HERE, "properties"), os.path.join(os.path.dirname(_HERE), "properties"))
    if os.path.isdir(path)
)
