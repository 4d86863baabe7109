"""The app's non-code files (stylesheet, icons, desktop entry, server plugin).

The folder stays at the top of the repository; the build installs it as the
package ``gui.resources`` (pyproject.toml, package-dir) so that
``importlib.resources`` finds it in a wheel, an editable install and a
source checkout alike (see gui/resource_paths.py).
"""
