"""The template sandbox behind ``swift_ext.render``: private, import what you need from ``swift_ext.render``.

Chat templates are untrusted code. ``swift_ext.render`` compiles and renders them here, in jinja2's
``ImmutableSandboxedEnvironment`` with transformers' options, filters and globals, every render bounded in time,
size and memory (docs/sandbox.md). One module per job, each importing only the ones listed before it
(``tests/architecture/test_import_graph.py`` holds that):

- ``limits``: the bounds (``RenderLimits``, the ``SWIFT_EXT_RENDER_*`` variables, process-wide and per-context
  values, the fixed bounds) and ``_Budget``, what the render in progress has used of them;
- ``sizes``: how large a value is as text, and the checks the compiled code calls on what a template prints,
  joins with ``~``, adds with ``+``, builds as a literal or loops over;
- ``operators``: ``*``, ``**`` and ``%``, ``str.format`` widths, and the methods of str / bytes / int / dict
  that pad, repeat, replace or join, each bounded before it runs;
- ``filters``: jinja's filters, bounded, and what transformers adds (``tojson``, ``raise_exception``,
  ``strftime_now``, ``{% generation %}``, and ``lipsum``, ``cycler``, ``namespace``, ``dict``);
- ``compiler``: the code generator, the template class and the ``_ChatSandbox`` environment, put together by
  ``_environment()``.
"""
