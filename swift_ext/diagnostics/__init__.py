"""Support code for the ``doctor``, ``inspect`` and ``audit`` commands.

Kept apart from the core: nothing here changes what ``swift_ext.encode``
produces; it only runs it, checks it and shows the result.
"""
