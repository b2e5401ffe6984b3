# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Python packages by discovery, plus og_kernel (the rest of the project's metadata is in pyproject.toml).

og_kernel is the collection's plugins/module_utils under the name the agents import it by; pyproject.toml alone
cannot add a renamed folder to discovered packages. The folders without __init__.py (templates, static) are
discovered as namespace packages, so their files are package data and setuptools has nothing to warn about.
"""

import warnings

from setuptools import find_namespace_packages, setup
from setuptools.warnings import InformationOnly

# `pip install -e .` needs setuptools' import finder for og_kernel, whose notice warns of folders shadowing the
# package from the working directory: here those folders are the package's own sources.
warnings.filterwarnings("ignore", message="Editable installation", category=InformationOnly)

setup(
    packages=find_namespace_packages(include=["server_app*", "gateway_agent*", "route_agent*"],
                                     exclude=["*.__pycache__"]) + ["og_kernel"],
    package_dir={"og_kernel": "plugins/module_utils"},
)
