"""Slot states kept for later: in host RAM (``prompt``) and on disk (``disk``)."""
