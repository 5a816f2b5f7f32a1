"""Offline evaluation: tracking and identity metrics on datasets with ground truth."""
