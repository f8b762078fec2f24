"""From samples to batches: the sample contract (``samples``), chat templates and label masking
(``templates``), reading image files (``image_files``), preprocessing per view (``image_processing``),
tokenisation and collation (``processing``) and sequence packing (``packing``).

May import: ``vlmkit.errors``, ``vlmkit.progress``, ``vlmkit.plugins``, ``vlmkit.model`` (its contracts and
token constants). Never training, interop or inference.
"""
