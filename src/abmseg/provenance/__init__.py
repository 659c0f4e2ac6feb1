"""Provenance of every pipeline result: who made it, from what, with which code, and is it intact.

Each rule job writes one JSON record per output under ``results/provenance/`` (see ``record``);
``lineage`` follows records back to the raw DICOM files, ``audit`` re-hashes a lineage to catch a
changed, removed or replaced file, ``export`` writes the run as W3C PROV-JSON.
"""
