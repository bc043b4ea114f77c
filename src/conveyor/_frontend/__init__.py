"""What the public faces share: building engines, turning calls into jobs, results.

The only layer that knows backends by name (through ``_backends.create``).
"""
