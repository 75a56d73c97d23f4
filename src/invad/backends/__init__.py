"""Built-in backend plugins. Each module (or package, as ``torch``) registers one backend through
``invad_backends``."""
