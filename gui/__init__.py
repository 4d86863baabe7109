"""Orthanc Transfers: fast, verified, all-or-nothing transfers between Orthanc servers."""

__version__ = "0.1.0"
