"""Server side of the transfers accelerator protocol, for orthanc-python.

The entry script ``transfers_accelerator.py`` (next to this package) wires
these modules to Orthanc. Every module here uses the standard library only:
Orthanc's embedded Python has nothing else installed. Nothing in this package
imports ``orthanc`` at module level, so the logic can be read and reasoned
about without Orthanc; the Orthanc API object is passed in by the entry script.
"""
