"""Tests of the Helm chart in helm/streamkit (and the tools they build)."""
