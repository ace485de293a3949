"""Calibration: readers that turn what users have into feed dicts, and streaming observers."""
