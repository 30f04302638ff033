"""Integrations with other libraries, each behind its extra (``pip install "gee-h[NAME]"``)."""
