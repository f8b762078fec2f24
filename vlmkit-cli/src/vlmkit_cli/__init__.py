"""The ``vlmkit`` command line. Start-up must stay light: no torch until a command needs it."""
