"""The recipes in pipelines/ install as ``avprep.recipes`` (a generic top-level ``pipelines`` package would
collide with other projects'); everything else is in pyproject.toml."""
from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["avprep*", "avmodels*"]), "avprep.recipes"],
      package_dir={"avprep.recipes": "pipelines"}, package_data={"avprep.recipes": ["*.toml"]})
