"""Tool calls, one class per family (``families``, the interface in ``base``): each holds
its whole reader (``calls``), stream reader (``stream``) and grammar syntax (``grammar``)."""
